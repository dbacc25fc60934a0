#!/usr/bin/env bash
# Check, with only `nft -j list ruleset` and `jq`, that the table one nftkit command
# programs is in place: the table, its base chains (type, hook, priority) and its sets,
# including every set a rule refers to. For node health checks and CI jobs.
#
#   scripts/verify-ruleset.sh [--table NAME] [--set NAME]... [--json FILE] COMMAND [ARGS...]
#
#   COMMAND ARGS  the nftkit command and its options, as the daemon or init container runs
#                 it (e.g. `dnat --map 169.254.169.254:80=10.0.0.5:8080 --hooks output`)
#   --table NAME  table name if nftkit ran with --table (default nftkit-COMMAND)
#   --set NAME    also require this set (repeatable)
#   --json FILE   read this `nft -j list ruleset` output instead of running nft
#
# The expected base chains come from `nftkit --dry-run COMMAND ARGS` (the binary in
# $NFTKIT, else `nftkit` on $PATH, else this checkout's target/{release,debug}/nftkit), so
# there is no second list of chains to keep in step with the code.
#
# Exit 0 when everything is there, 1 with one line per problem otherwise, 2 on bad usage
# (including options nftkit refuses).
set -euo pipefail

usage() { echo "usage: $0 [--table NAME] [--set NAME]... [--json FILE] COMMAND [ARGS...]" >&2; exit 2; }
table="" json="" sets=()
while [ $# -gt 0 ]; do
    case "$1" in
        --table) table=${2:?}; shift 2 ;;
        --set) sets+=("${2:?}"); shift 2 ;;
        --json) json=${2:?}; shift 2 ;;
        -h|--help) usage ;;
        -*) echo "unknown option $1" >&2; usage ;;
        *) break ;;
    esac
done
[ $# -ge 1 ] || usage
command=$1
table_given=$table
table=${table:-nftkit-$command}

here=$(cd "$(dirname "$0")/.." && pwd)
nftkit=${NFTKIT:-}
if [ -z "$nftkit" ]; then
    for candidate in "$(command -v nftkit || true)" "$here/target/release/nftkit" "$here/target/debug/nftkit"; do
        if [ -n "$candidate" ] && [ -x "$candidate" ]; then nftkit=$candidate; break; fi
    done
fi
[ -n "$nftkit" ] || { echo "nftkit not found: set NFTKIT=/path/to/nftkit" >&2; exit 2; }

# Base chains of the desired table, "name type hook priority", from the dry-run text:
#   chain NAME {  ...  type T hook H priority P; policy accept;
errors=$(mktemp)
trap 'rm -f "$errors"' EXIT
if ! dry=$(env -u NFTKIT_BACKEND "$nftkit" -q --backend nftables --dry-run ${table_given:+--table "$table_given"} "$@" 2>"$errors"); then
    echo "cannot derive the expected chains: $(head -n 1 "$errors")" >&2
    exit 2
fi
mapfile -t chains < <(awk '
    $1 == "chain" { name = $2 }
    $1 == "type" && $3 == "hook" && $5 == "priority" { p = $6; sub(/;$/, "", p); print name, $2, $4, p }
' <<<"$dry")
if [ "${#chains[@]}" -eq 0 ]; then
    echo "nftkit $command with these options programs no nf_tables table: nothing to check" >&2
    exit 2
fi

command -v jq >/dev/null || { echo "jq is required" >&2; exit 2; }
if [ -n "$json" ]; then
    ruleset=$(cat "$json")
else
    ruleset=$(nft -j list ruleset)
fi

problems=()
objs() { jq -c --arg t "$table" ".nftables[] | select(.$1 and .$1.family == \"inet\" and .$1.${2:-table} == \$t) | .$1" <<<"$ruleset"; }

if [ -z "$(objs table name)" ]; then
    echo "table inet $table is missing"
    exit 1
fi
for spec in "${chains[@]}"; do
    read -r name type hook prio <<<"$spec"
    got=$(objs chain | jq -r --arg n "$name" 'select(.name == $n) | "\(.type // "-") \(.hook // "-") \(.prio // "-")"')
    if [ -z "$got" ]; then
        problems+=("chain $name is missing from table inet $table")
    elif [ "$got" != "$type $hook $prio" ]; then
        problems+=("chain $name is 'type/hook/priority $got', expected '$type $hook $prio'")
    fi
done
have_sets=$(objs set | jq -r '.name')
# Every set a rule looks up (right-hand "@name"), plus the ones asked for.
wanted=$(objs rule | jq -r '.. | strings | select(startswith("@")) | ltrimstr("@")' | sort -u)
for s in $wanted "${sets[@]}"; do
    grep -qxF "$s" <<<"$have_sets" || problems+=("set $s is missing from table inet $table")
done
if [ "${#problems[@]}" -gt 0 ]; then
    printf '%s\n' "${problems[@]}"
    exit 1
fi
echo "table inet $table: base chains and sets present"
