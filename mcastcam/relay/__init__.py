"""``mcastcam relay``: a stream over a unicast tunnel to a LAN where multicast does not pass."""
