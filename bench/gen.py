#!/usr/bin/env python3
"""Inputs of scripts/bench.sh for N non-masquerade CIDRs, written to DIR:

  config/ip-masq-agent   ip-masq-agent-v2 config (nonMasqueradeCIDRs)
  legacy.rules           upstream's iptables-restore input: POSTROUTING jump, link-local
                         RETURN, one `-d CIDR -j RETURN` per CIDR, MASQUERADE
  nft-rules.nft          the same as nft rules (one rule per CIDR), create-only

The CIDRs are /30s 8 addresses apart from 172.16.0.0 (never merge; all in 172.16/12;
50 000 reach 172.22.26.x), so the datapath test's 10.99.x addresses are masqueraded.

  gen.py N DIR
"""
import ipaddress
import os
import sys

n, out = int(sys.argv[1]), sys.argv[2]
base = int(ipaddress.IPv4Address("172.16.0.0"))
cidrs = [f"{ipaddress.IPv4Address(base + i * 8)}/30" for i in range(n)]
os.makedirs(f"{out}/config", exist_ok=True)
with open(f"{out}/config/ip-masq-agent", "w") as f:
    if cidrs:
        f.write("nonMasqueradeCIDRs:\n" + "".join(f"  - {c}\n" for c in cidrs))
    else:
        f.write("nonMasqueradeCIDRs: []\n")
ret = '-m comment --comment "ip-masq-agent: local traffic is not subject to MASQUERADE"'
with open(f"{out}/legacy.rules", "w") as f:
    f.write("*nat\n:IP-MASQ-AGENT - [0:0]\n")
    f.write(
        '-A POSTROUTING -m comment --comment "ip-masq-agent: ensure nat POSTROUTING directs '
        'all non-LOCAL destination traffic to our custom IP-MASQ-AGENT chain" '
        "-m addrtype ! --dst-type LOCAL -j IP-MASQ-AGENT\n"
    )
    f.write(f"-A IP-MASQ-AGENT {ret} -d 169.254.0.0/16 -j RETURN\n")
    for c in cidrs:
        f.write(f"-A IP-MASQ-AGENT {ret} -d {c} -j RETURN\n")
    f.write(
        '-A IP-MASQ-AGENT -m comment --comment "ip-masq-agent: outbound traffic is subject '
        'to MASQUERADE (must be last in chain)" -j MASQUERADE\nCOMMIT\n'
    )
with open(f"{out}/nft-rules.nft", "w") as f:
    f.write("table ip ipmasq {\n")
    f.write("\tchain POSTROUTING {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n")
    f.write("\t\tfib daddr type != local jump IP-MASQ-AGENT\n\t}\n")
    f.write("\tchain IP-MASQ-AGENT {\n\t\tip daddr 169.254.0.0/16 return\n")
    for c in cidrs:
        f.write(f"\t\tip daddr {c} return\n")
    f.write("\t\tmasquerade\n\t}\n}\n")
