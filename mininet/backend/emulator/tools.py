"""The emulator's stand-in for pycuda.tools.DeviceMemoryPool: freed blocks are held for
reuse, by exact size (so every block still ends at its guard page), and made inaccessible
while held, so a kernel that touches freed memory faults.

As in PyCUDA (mempool.hpp), the pool holds plain addresses, never Python objects with
finalizers of their own: the garbage collector finalizes the objects of a reference cycle
(a failed test's traceback keeps a whole training step in one) in no set order, so a pooled
allocation wrapping a DeviceAllocation could give back a block its inner allocation had
already freed, and the next block of that size came out at address 0."""
import threading

from . import driver


class PooledDeviceAllocation(driver.DeviceAllocation):
    """A block of the pool: free() gives it back (int() stays the address, as in PyCUDA)."""
    kind = "pooled_device_allocation"

    def __init__(self, pool, ptr, size):
        super().__init__(ptr, size)
        self.pool = pool

    def _release(self):
        self.pool._give_back(self.ptr, self.size)


class DeviceMemoryPool:
    def __init__(self):
        self._held, self._lock, self._holding = {}, threading.Lock(), True   # size -> [address]
        self.active_blocks = self.active_bytes = self.managed_bytes = 0

    @property
    def held_blocks(self):
        return sum(len(v) for v in self._held.values())

    def allocate(self, nbytes):
        nbytes = int(nbytes)
        with self._lock:
            reuse = self._held.get(nbytes)
            ptr = reuse.pop() if reuse else None
        if ptr is not None:
            driver._hold(ptr, False)
        else:
            ptr = driver._alloc(nbytes)
            with self._lock:
                self.managed_bytes += nbytes
        with self._lock:
            self.active_blocks += 1
            self.active_bytes += nbytes
        return PooledDeviceAllocation(self, ptr, nbytes)

    def _give_back(self, ptr, nbytes):
        with self._lock:
            self.active_blocks -= 1
            self.active_bytes -= nbytes
            if not self._holding:
                self.managed_bytes -= nbytes
                driver._free(ptr)
                return
            driver._hold(ptr, True)
            self._held.setdefault(nbytes, []).append(ptr)

    def free_held(self):
        with self._lock:
            held, self._held = self._held, {}
            for size, ptrs in held.items():
                self.managed_bytes -= size * len(ptrs)
        for ptrs in held.values():
            for ptr in ptrs:
                driver._free(ptr)

    def stop_holding(self):
        self._holding = False
        self.free_held()

    def __del__(self):
        # blocks still out are freed when they come back (PyCUDA frees the held ones
        # when the pool goes)
        try:
            self.stop_holding()
        except Exception:   # interpreter shutdown
            pass
