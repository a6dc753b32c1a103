"""Simulated switches and host agents for benchmarks/scale.py.

`ofwire` packs and parses the OpenFlow 1.3 messages by hand (struct: os-ken's
parser would cost more than the controller it measures); `switch` is one simulated
br-dl over TCP (or TLS) with a flow table that answers dumps and expires flows;
`agents` holds the host agents' streams (acknowledging routes after a delay);
`tracker` matches what the switches receive to the PacketIns sent (a setup is
done when its flows on both switches and its PacketOut arrived); `workload` picks
fresh pairs and paces them; `procs` starts the controller and the baseline app;
`baseline_app` is that baseline (one FlowMod and one PacketOut per PacketIn).

Imports: the standard library, websockets and httpx; `baseline_app` os-ken.  Never
the controller's modules: the benchmark talks to the controller only over its
wire protocols and API, as real switches and agents do.
"""
