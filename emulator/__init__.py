"""Local ActiveCampaign API v3 emulator for tests, the demo and the benchmark (not deployed).

    with Emulator(api_key="k", lists={3: "Newsletter"}, time_scale=60).start() as emu:
        config_hostname = emu.hostname          # http://127.0.0.1:PORT, API base is hostname + "/api/3"
        ...
        emu.subscribers(3)                       # emails subscribed to list 3
"""
from .limits import FAULT_KINDS, Faults
from .server import Emulator, tune_gc_for_millions
from .store import SUBSCRIBED, UNSUBSCRIBED

__all__ = ["Emulator", "Faults", "FAULT_KINDS", "SUBSCRIBED", "UNSUBSCRIBED", "tune_gc_for_millions"]
