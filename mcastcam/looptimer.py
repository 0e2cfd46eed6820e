"""Re-export of :class:`mcastcam.driver.LoopTimer` (for code not yet on the Driver).

Delete once nothing imports it.
"""

from mcastcam.driver import LoopTimer

__all__ = ["LoopTimer"]
