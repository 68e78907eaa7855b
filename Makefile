# The two commands of the README. Both set up .venv from pyproject.toml first.
.PHONY: demo test up down setup clean

demo:  ## set up and run the DAG end to end on generated data (SQLite, ONNX Runtime CPU)
	bash scripts/demo.sh

test:  ## set up and run the test suite
	bash scripts/test.sh

up:    ## a local deployment (plain processes, SQLite, LocalExecutor) with the UI at http://localhost:8080
	bash scripts/up.sh

down:  ## stop what `make up` started
	bash scripts/down.sh

setup:
	bash scripts/setup.sh

clean:
	rm -rf var .pytest_cache
