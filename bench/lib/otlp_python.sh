# otlp_python DIR: prints a Python that has the opentelemetry-proto pinned in
# tests/upstreams/setup.sh (for tests/upstreams/otlp_receiver.py): $1 when it
# is one, else target/upstreams/venv's, else a new virtual environment in
# DIR (installed with pip). Sourced by bench/run.sh and bench/callgrind.sh.
otlp_python() {
    local python=${OTLP_PYTHON:-$ROOT/target/upstreams/venv/bin/python}
    if ! "$python" -c 'import opentelemetry.proto' 2>/dev/null; then
        python3 -m venv "$1/otlp-venv" >&2
        "$1/otlp-venv/bin/python" -m pip install --quiet --disable-pip-version-check \
            opentelemetry-proto==1.45.2 protobuf==7.36.2 >&2
        python=$1/otlp-venv/bin/python
    fi
    printf '%s\n' "$python"
}
