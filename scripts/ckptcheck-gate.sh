#!/usr/bin/env bash
# What the GitHub Action (action.yml) runs; usable on any CI or by hand.
#
#   ckptcheck-gate.sh install PIP_SPEC...
#       Creates a fresh venv ($CKPTCHECK_VENV, default $RUNNER_TEMP/ckptcheck-venv) with
#       $CKPTCHECK_PYTHON (default python3), pip-installs PIP_SPEC into it (`ckptcheck==0.1.0`, a
#       wheel path or URL), checks that the `ckptcheck` it installed runs, and records its path
#       (`bin=` in $GITHUB_OUTPUT, its directory in $GITHUB_PATH, when those are set).
#
#   ckptcheck-gate.sh gate MANIFEST [--out-dir DIR] [--strict true|false]
#       Runs `ckptcheck gate MANIFEST` with the JUnit and HTML reports written to
#       DIR/junit.xml and DIR/report.html (DIR default ckptcheck-report), the text report shown in
#       the log and saved as DIR/report.txt, and added to $GITHUB_STEP_SUMMARY when set. Writes
#       `exit-code=`, `junit=`, `report=` to $GITHUB_OUTPUT when set, and exits with ckptcheck's
#       own code: 0 clean, 1 findings at or above the fail level (warnings too with --strict true),
#       2 could not run. The binary is $CKPTCHECK_BIN when set, else `ckptcheck` on PATH.
set -euo pipefail

die() {
    # A GitHub annotation is plain text elsewhere.
    echo "::error title=ckptcheck-gate::$*" >&2
    exit 2
}

usage() {
    sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

# Appends `key=value` to the file $1 names, when it is set.
record() {
    local file=$1 line=$2
    if [ -n "$file" ]; then
        printf '%s\n' "$line" >>"$file"
    fi
}

cmd_install() {
    [ "$#" -ge 1 ] || die "install: no package given: name what pip should install (\`ckptcheck\`, \`ckptcheck==0.1.0\`, a wheel path)"
    local python=${CKPTCHECK_PYTHON:-python3}
    local venv=${CKPTCHECK_VENV:-${RUNNER_TEMP:-${TMPDIR:-/tmp}}/ckptcheck-venv}
    [ ! -e "$venv" ] || die "install: $venv already exists: the venv must be fresh; remove it or set CKPTCHECK_VENV to another path"
    command -v "$python" >/dev/null 2>&1 || die "install: Python interpreter \`$python\` not found: install Python 3.8+ (actions/setup-python) or set the \`python\` input / CKPTCHECK_PYTHON"
    "$python" -m venv "$venv" || die "install: \`$python -m venv $venv\` failed (on Debian/Ubuntu: apt-get install python3-venv)"
    local bindir=$venv/bin
    [ -d "$bindir" ] || bindir=$venv/Scripts # Windows venv layout
    "$bindir/python" -m pip install --quiet --disable-pip-version-check "$@" || die "install: \`pip install $*\` failed (see pip's message above)"
    local bin=$bindir/ckptcheck
    [ -x "$bin" ] || [ -x "$bin.exe" ] || die "install: \`pip install $*\` succeeded but put no ckptcheck binary in $bindir: is it the ckptcheck wheel?"
    [ -x "$bin" ] || bin=$bin.exe
    "$bin" --version || die "install: the installed $bin does not run: a wheel for another platform?"
    record "${GITHUB_OUTPUT:-}" "bin=$bin"
    record "${GITHUB_PATH:-}" "$bindir"
}

cmd_gate() {
    local manifest="" out_dir=ckptcheck-report strict=false
    while [ "$#" -gt 0 ]; do
        case $1 in
            --out-dir)
                [ "$#" -ge 2 ] && [ -n "$2" ] || die "gate: --out-dir needs a directory"
                out_dir=$2
                shift 2
                ;;
            --strict)
                [ "$#" -ge 2 ] || die "gate: --strict needs true or false"
                strict=$2
                shift 2
                ;;
            -*) die "gate: unknown option \`$1\`: the options are --out-dir DIR and --strict true|false" ;;
            *)
                [ -z "$manifest" ] || die "gate: two manifests given (\`$manifest\`, \`$1\`): gate one lineage per step"
                manifest=$1
                shift
                ;;
        esac
    done
    [ -n "$manifest" ] || die "gate: no manifest given: the lineage TOML to gate (docs/bisect.md)"
    case $strict in
        true | false) ;;
        *) die "gate: --strict (the action's \`strict\` input) is \`$strict\`: it must be true or false" ;;
    esac

    local bin=${CKPTCHECK_BIN:-ckptcheck}
    command -v "$bin" >/dev/null 2>&1 || die "gate: \`$bin\` not found: install ckptcheck first (the action's \`package\` input, \`pip install ckptcheck\`) or set CKPTCHECK_BIN"
    mkdir -p "$out_dir" || die "gate: cannot create the report directory $out_dir"

    local junit=$out_dir/junit.xml report=$out_dir/report.html text=$out_dir/report.txt
    local args=(gate "$manifest" --junit "$junit" --report "$report")
    [ "$strict" = false ] || args+=(--strict)
    # ckptcheck's exit code, not tee's; set -e must not stop us before the outputs are recorded.
    local code=0
    "$bin" "${args[@]}" | tee "$text" || code=${PIPESTATUS[0]}

    record "${GITHUB_OUTPUT:-}" "exit-code=$code"
    record "${GITHUB_OUTPUT:-}" "junit=$junit"
    record "${GITHUB_OUTPUT:-}" "report=$report"
    local verdict
    case $code in
        0) verdict="passed: no step crossed a fail threshold" ;;
        1) verdict="failed (exit 1): findings at or above the fail level; the reports name the step and the cause" ;;
        2) verdict="could not run (exit 2): see ckptcheck's error above" ;;
        *) verdict="ended with exit code $code" ;;
    esac
    if [ -n "${GITHUB_STEP_SUMMARY:-}" ]; then
        {
            echo "### ckptcheck gate \`$manifest\`: $verdict"
            echo
            if [ -s "$text" ]; then
                echo '```'
                cat "$text"
                echo '```'
            fi
        } >>"$GITHUB_STEP_SUMMARY"
    fi
    if [ "$code" -ne 0 ]; then
        echo "::error title=ckptcheck gate::$manifest $verdict" >&2
    fi
    return "$code"
}

[ "$#" -ge 1 ] || usage
sub=$1
shift
case $sub in
    install) cmd_install "$@" ;;
    gate) cmd_gate "$@" ;;
    -h | --help) usage ;;
    *) die "unknown subcommand \`$sub\`: install or gate (--help)" ;;
esac
