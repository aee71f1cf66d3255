"""Jittered exponential backoff for reconnects and sensor re-probes: never a tight loop,
and a classroom full of nodes that lost the broker together does not come back in lockstep."""
import random


def delay_ms(failures, first_ms, max_ms):
    """Delay before the next attempt after `failures` failed ones: the full range doubles
    per failure up to max_ms and the delay is drawn from its upper half (decorrelates
    nodes, keeps a floor)."""
    cap = min(max_ms, first_ms << min(failures, 16))
    half = cap // 2
    return half + random.getrandbits(16) * (cap - half) // 65536
