#!/usr/bin/env bash
# Check, with only `nft -j list ruleset` and `jq`, that the table one nftkit command
# programs is in place: the table, its base chains (type, hook, priority) and its sets,
# including every set a rule refers to. For node health checks and CI jobs.
#
#   scripts/verify-ruleset.sh [--table NAME] [--set NAME]... [--json FILE] COMMAND
#
#   --table NAME  table name if nftkit ran with --table (default nftkit-COMMAND)
#   --set NAME    also require this set (repeatable)
#   --json FILE   read this `nft -j list ruleset` output instead of running nft
#
# Exit 0 when everything is there, 1 with one line per problem otherwise, 2 on bad usage.
set -euo pipefail

usage() { echo "usage: $0 [--table NAME] [--set NAME]... [--json FILE] redirect|masquerade|local-address|dnat|netpol" >&2; exit 2; }
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
[ $# -eq 1 ] || usage
command=$1
table=${table:-nftkit-$command}

# Base chains each command creates: "name type hook priority".
case "$command" in
    redirect) chains=("nat-output nat output -100") ;;
    masquerade) chains=("nat-postrouting nat postrouting 100") ;;
    local-address) chains=("raw-prerouting filter prerouting -300" "raw-output filter output -300"
                           "filter-input filter input 0" "filter-output filter output 0") ;;
    # dnat: with --hooks output only, pass --table and expect nat-prerouting to be missing.
    dnat) chains=("nat-prerouting nat prerouting -100" "nat-output nat output -100" "filter-forward filter forward 0") ;;
    netpol) chains=("filter-forward filter forward 0") ;;
    *) echo "unknown command '$command' (expected redirect, masquerade, local-address, dnat or netpol)" >&2; exit 2 ;;
esac

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
