#!/usr/bin/env bash
# PyGRANSO 1.2.0 in its own pinned environment, for bench_refine.py only (never a dependency
# of sipflow: AGPL, and its release imports numpy < 2 API and gurobipy).
#   bash benchmarks/pygranso_env.sh [ENV]        # default benchmarks/.pygranso-env
#   python benchmarks/bench_refine.py --pygranso-python benchmarks/.pygranso-env/bin/python
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
env=${1:-$here/.pygranso-env}
python3 -m venv "$env"
"$env/bin/pip" install -q "torch==2.13.0" "numpy==1.26.4" "scipy==1.13.1" \
    "osqp==0.6.7.post3" "gurobipy==12.0.3" "pygranso==1.2.0" "pydantic>=2.6,<3" "pluggy>=1.5"
"$env/bin/python" -c "from pygranso.pygranso import pygranso; print('PyGRANSO ready:', '$env')"
