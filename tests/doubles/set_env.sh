# Fake CANN environment for tests (test equipment only): what the toolkit's set_env.sh does, but pointing
# at the doubles in this folder. Tests pass it as `cann_env`; the real one is
# /usr/local/Ascend/ascend-toolkit/set_env.sh.
_twins_doubles="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export ASCEND_TOOLKIT_HOME="${_twins_doubles}/toolkit"
export ASCEND_HOME_PATH="${ASCEND_TOOLKIT_HOME}"
export ASCEND_OPP_PATH="${ASCEND_TOOLKIT_HOME}/opp"
export ASCEND_AICPU_PATH="${ASCEND_TOOLKIT_HOME}"
export TOOLCHAIN_HOME="${ASCEND_TOOLKIT_HOME}/toolkit"
export LD_LIBRARY_PATH="${ASCEND_TOOLKIT_HOME}/lib64${LD_LIBRARY_PATH:+:${LD_LIBRARY_PATH}}"
export PATH="${_twins_doubles}/bin${PATH:+:${PATH}}"
export PYTHONPATH="${_twins_doubles}${PYTHONPATH:+:${PYTHONPATH}}"
unset _twins_doubles
