#!/usr/bin/env bash
# kubernetes-qpoint-init's default ruleset as its docker-entrypoint.sh applies it: one
# iptables/ip6tables call per rule (bench input; the same rules as qpoint-v{4,6}.restore).
#   qpoint-percmd.sh IPTABLES IP6TABLES      e.g. iptables-legacy ip6tables-legacy
ipt=$1 ip6=$2
for b in 127.0.0.0/8 10.0.0.0/8 172.16.0.0/12 192.168.0.0/16; do $ipt -t nat -A OUTPUT -p tcp -d $b -j ACCEPT; done
for b in ::1/128 fc00::/7; do $ip6 -t nat -A OUTPUT -p tcp -d $b -j ACCEPT; done
for t in $ipt $ip6; do
    for m in 10080:80 10443:443; do
        $t -t nat -A OUTPUT -p tcp --dport ${m#*:} -m owner --uid-owner 1010 -j ACCEPT
        $t -t nat -A OUTPUT -p tcp --dport ${m#*:} -m owner --gid-owner 1010 -j ACCEPT
        $t -t nat -A OUTPUT -p tcp --dport ${m#*:} -j REDIRECT --to-ports ${m%:*}
    done
done
