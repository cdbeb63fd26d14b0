"""The emulator's stand-in for pycuda.tools.DeviceMemoryPool: freed blocks are held for
reuse, by exact size (so every block still ends at its guard page), and made inaccessible
while held, so a kernel that touches freed memory faults."""
import threading

from . import driver


class PooledDeviceAllocation:
    def __init__(self, pool, alloc, size):
        self.pool, self.alloc, self.size = pool, alloc, size
        self.ptr = alloc.ptr

    def __int__(self):
        return self.ptr

    __index__ = __int__

    def free(self):
        if self.alloc is not None:
            self.pool._give_back(self.alloc, self.size)
            self.alloc = None

    def __del__(self):
        try:
            self.free()
        except Exception:   # interpreter shutdown
            pass


class DeviceMemoryPool:
    def __init__(self):
        self._held, self._lock, self._holding = {}, threading.Lock(), True
        self.active_blocks = self.active_bytes = self.managed_bytes = 0

    @property
    def held_blocks(self):
        return sum(len(v) for v in self._held.values())

    def allocate(self, nbytes):
        nbytes = int(nbytes)
        with self._lock:
            reuse = self._held.get(nbytes)
            alloc = reuse.pop() if reuse else None
        if alloc is not None:
            driver._runtime().mn_emu_hold(alloc.ptr, 0)
        else:
            alloc = driver.mem_alloc(nbytes)
            with self._lock:
                self.managed_bytes += nbytes
        with self._lock:
            self.active_blocks += 1
            self.active_bytes += nbytes
        return PooledDeviceAllocation(self, alloc, nbytes)

    def _give_back(self, alloc, nbytes):
        with self._lock:
            self.active_blocks -= 1
            self.active_bytes -= nbytes
            if not self._holding:
                self.managed_bytes -= nbytes
                alloc.free()
                return
            self._held.setdefault(nbytes, []).append(alloc)
            driver._runtime().mn_emu_hold(alloc.ptr, 1)

    def free_held(self):
        with self._lock:
            held, self._held = self._held, {}
            for size, allocs in held.items():
                self.managed_bytes -= size * len(allocs)
        for allocs in held.values():
            for a in allocs:
                a.free()

    def stop_holding(self):
        self._holding = False
        self.free_held()
