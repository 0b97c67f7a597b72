# Source this file: it creates (once) and activates the project venv in .venv.
#
# Finds a Python >= 3.12 on PATH or under pyenv, makes .venv, installs the
# package with its `fenics` and `test` extras, and records a stamp of
# pyproject.toml so that later runs skip the install unless it changed.
# Set SENSITIVITY_PYTHON to force an interpreter, SENSITIVITY_VENV for another
# venv directory and SENSITIVITY_EXTRAS for other extras (e.g.
# `fenics-complex,test`: the complex PETSc build, which needs its own venv).

_sens_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_sens_venv="${SENSITIVITY_VENV:-$_sens_root/.venv}"
_sens_extras="${SENSITIVITY_EXTRAS:-fenics,test}"

_sens_ok_python() {
    "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1
}

_sens_find_python() {
    local cand
    if [ -n "${SENSITIVITY_PYTHON:-}" ]; then
        if _sens_ok_python "$SENSITIVITY_PYTHON"; then echo "$SENSITIVITY_PYTHON"; return 0; fi
        echo "bootstrap: SENSITIVITY_PYTHON=$SENSITIVITY_PYTHON is not a Python >= 3.12" >&2
        return 1
    fi
    for cand in python3.13 python3.12 python3; do
        if command -v "$cand" >/dev/null 2>&1 && _sens_ok_python "$(command -v "$cand")"; then
            command -v "$cand"; return 0
        fi
    done
    local pyroot="${PYENV_ROOT:-$HOME/.pyenv}"
    command -v pyenv >/dev/null 2>&1 && pyroot="$(pyenv root)"
    for cand in "$pyroot"/versions/3.13*/bin/python3.13 "$pyroot"/versions/3.12*/bin/python3.12; do
        if [ -x "$cand" ] && _sens_ok_python "$cand"; then echo "$cand"; return 0; fi
    done
    echo "bootstrap: no Python >= 3.12 found on PATH or under pyenv ($pyroot/versions);" \
         "install one or set SENSITIVITY_PYTHON" >&2
    return 1
}

_sens_bootstrap() {
    local stamp="$_sens_venv/.sensitivity-stamp"
    local want
    want="$( (cat "$_sens_root/pyproject.toml"; echo "$_sens_extras") | sha256sum | cut -d' ' -f1)"
    if [ -x "$_sens_venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        return 0
    fi
    local py
    py="$(_sens_find_python)" || return 1
    echo "bootstrap: creating $_sens_venv with $py" >&2
    "$py" -m venv "$_sens_venv" || return 1
    "$_sens_venv/bin/python" -m pip install --quiet --upgrade pip || return 1
    "$_sens_venv/bin/python" -m pip install --quiet -e "$_sens_root[$_sens_extras]" || return 1
    echo "$want" > "$stamp"
}

_sens_bootstrap || { echo "bootstrap: failed" >&2; return 1 2>/dev/null || exit 1; }
export PATH="$_sens_venv/bin:$PATH"
export VIRTUAL_ENV="$_sens_venv"
# One BLAS thread per MPI rank unless the user says otherwise.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
