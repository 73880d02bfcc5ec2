"""A shared-memory ring of camera frames for stages on one host: pixels are written once, never sent.

The capture process owns one ring per camera (`FrameRingWriter`): it creates the shared-memory
block, writes each frame into the next slot and publishes only a small header on ZeroMQ -- the
slot and the frame's write sequence number (`ratrig.messages.FrameRefPacket`, topic
``frameref/<camera>``). Readers
(`FrameRingReader`) attach by name and read the slot in place. Ownership follows skellycam's rings:
the writer creates and unlinks (also when it dies: Python's resource tracker unlinks what the
writer created); readers only attach and close, and never unlink.

Layout of the block (little-endian)::

    header   64 bytes: magic b"RATRING1", version, slots, height, width, channels, dtype code
    seq      (slots,) uint64: per-slot seqlock word
    frames   (slots, H, W, C) of the frame dtype, each slot 64-byte aligned

Seqlock: writing frame number n (n = 0, 1, 2, ...) into slot ``n % slots`` first sets the slot's
word to ``2n + 1`` (odd: being written), copies the pixels, then sets it to ``2n + 2``. A reader that
was told "frame n is in slot s" checks the word is ``2n + 2`` before it uses the pixels and again
after: any other value means the writer has lapped it (the slot holds, or is getting, a newer
frame), and the reader is told so (`Lapped`) instead of being handed a torn frame. With
`FrameRingReader.view` the check after use is the caller's (`FrameView.intact()`), so a frame can be
used in place (zero copies) and a result computed from an overwritten slot discarded.

Ordering: the words are 8-byte aligned numpy stores and loads; on x86-64 (total store order) the
pixel copy cannot become visible before the odd word nor after the even one, which is what the
seqlock needs. Weakly ordered CPUs (ARM) would need explicit fences, which numpy does not offer:
`FrameRingWriter` refuses to create a ring there rather than risk torn frames.
"""
from __future__ import annotations

import mmap
import os
import platform
import re
import struct
from dataclasses import dataclass, field
from multiprocessing import shared_memory

import numpy as np

MAGIC = b"RATRING1"
VERSION = 1
HEADER_BYTES = 64
_HEADER = struct.Struct("<8sIIIIII")  # magic, version, slots, height, width, channels, dtype code
_DTYPES = {1: np.dtype(np.uint8), 2: np.dtype(np.uint16)}
_DTYPE_CODES = {v: k for k, v in _DTYPES.items()}
_TSO_MACHINES = {"x86_64", "amd64", "i386", "i686", "x86"}
_NAME = re.compile(r"[A-Za-z0-9_\-]{1,200}")


class RingError(RuntimeError):
    """A ring that cannot be created or attached (name, size, layout), with what was expected."""


class Lapped(RingError):
    """The slot no longer holds the frame the reader was told about: the writer lapped the reader."""


def ring_name(base_port: int, camera: str, pid: int) -> str:
    """The shared-memory name of a camera's ring: unique per session (base port), camera and writer process
    (a restarted camera process makes a new ring; readers attach to the name each message carries)."""
    return f"ratrig{base_port}_{camera}_{pid}"


def _align(n: int, to: int = 64) -> int:
    return (n + to - 1) // to * to


def _layout(slots: int, shape: tuple[int, int, int], dtype: np.dtype) -> tuple[int, int, int]:
    """-> (offset of the seq words, offset of slot 0, bytes per slot incl. padding)."""
    seq_off = HEADER_BYTES
    frames_off = _align(seq_off + 8 * slots)
    slot_bytes = _align(int(np.prod(shape)) * dtype.itemsize)
    return seq_off, frames_off, slot_bytes


def _frame_shape(shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(shape) == 2:
        return int(shape[0]), int(shape[1]), 1
    if len(shape) == 3 and 1 <= shape[2] <= 4:
        return int(shape[0]), int(shape[1]), int(shape[2])
    raise RingError(f"frame shape {shape}: expected (H, W) or (H, W, 1..4)")


class FrameRingWriter:
    """The capture side: creates the ring, writes frames, unlinks it on `close()`.

    Args:
        name: shared-memory name (`ring_name`); an existing block of that name is an error (another
            session, or a crashed one whose block the OS still holds: its message says so).
        slots: frames the ring holds; a reader may fall behind by up to slots - 1 frames.
        shape: (H, W) or (H, W, C) of every frame.
        dtype: uint8 or uint16.
    """

    def __init__(self, name: str, slots: int, shape: tuple[int, ...], dtype: np.dtype | type = np.uint8) -> None:
        if platform.machine().lower() not in _TSO_MACHINES:
            raise RingError(f"shared-memory frame rings need an x86-64 CPU (total store order); this is "
                            f"{platform.machine()!r}: use the ZeroMQ wire")
        if slots < 2:
            raise RingError(f"ring {name}: expected at least 2 slots, got {slots}")
        dt = np.dtype(dtype)
        if dt not in _DTYPE_CODES:
            raise RingError(f"ring {name}: frame dtype {dt}, expected uint8 or uint16")
        self.name = name
        self.slots = int(slots)
        self.shape = _frame_shape(tuple(shape))
        self.image_shape = tuple(shape)
        self.dtype = dt
        seq_off, frames_off, slot_bytes = _layout(self.slots, self.shape, dt)
        size = frames_off + self.slots * slot_bytes
        try:
            self._shm = shared_memory.SharedMemory(name=name, create=True, size=size)
        except FileExistsError:
            raise RingError(f"ring {name}: a shared-memory block of this name exists (another session on the same "
                            f"ports, or a crashed one: remove /dev/shm/{name} if no session runs)") from None
        buf = self._shm.buf
        _HEADER.pack_into(buf, 0, MAGIC, VERSION, self.slots, *self.shape, _DTYPE_CODES[dt])
        self._seq = np.ndarray((self.slots,), np.uint64, buf, seq_off)
        self._seq[:] = 0
        self._frames = np.ndarray((self.slots, *self.shape), dt, buf, frames_off, (slot_bytes, *_c_strides(self.shape, dt)))
        self.written = 0  # frames written so far; the next one gets this sequence number
        self._closed = False

    def write(self, image: np.ndarray) -> tuple[int, int]:
        """Copy one frame into the next slot -> (slot, sequence number) to publish."""
        img = np.asarray(image)
        if img.shape != self.image_shape or img.dtype != self.dtype:
            raise RingError(f"ring {self.name}: frame {img.shape} {img.dtype}, expected {self.image_shape} {self.dtype}")
        n = self.written
        slot = n % self.slots
        self._seq[slot] = 2 * n + 1  # odd: being written; a reader of the previous frame here sees it lapped
        self._frames[slot].reshape(img.shape)[...] = img
        self._seq[slot] = 2 * n + 2
        self.written = n + 1
        return slot, n

    def close(self) -> None:
        """Unmap and unlink the ring (readers that are attached keep their mapping until they close)."""
        if self._closed:
            return
        self._closed = True
        self._seq = self._frames = None  # type: ignore[assignment]
        self._shm.close()
        try:
            self._shm.unlink()
        except FileNotFoundError:
            pass

    def __enter__(self) -> FrameRingWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _c_strides(shape: tuple[int, int, int], dt: np.dtype) -> tuple[int, int, int]:
    h, w, c = shape
    return (w * c * dt.itemsize, c * dt.itemsize, dt.itemsize)


class _Attached:
    """A reader's read-only mapping of an existing block, unknown to the resource tracker.

    `SharedMemory(name)` on Python < 3.13 registers an attached block with the resource tracker,
    which unlinks it when the reader's process exits (or, for processes sharing one tracker, drops
    the writer's registration), under the writer's feet: readers map the block themselves, as
    SharedMemory does, without registering it (Python 3.13's ``track=False``). Read-only: a reader
    cannot scribble on a frame another reader uses.
    """

    def __init__(self, name: str) -> None:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise RingError(f"ring {str(name)[:80]!r}: expected a name of 1-200 letters, digits, '_' or '-'")
        try:
            if os.name != "posix":
                raise RingError(f"ring {name}: shared-memory rings are implemented for POSIX systems only")
            import _posixshmem  # CPython's own module behind multiprocessing.shared_memory

            fd = _posixshmem.shm_open("/" + name, os.O_RDONLY, mode=0o600)
        except FileNotFoundError:
            raise RingError(f"ring {name}: no such shared-memory block (has the camera process started, on this "
                            f"host?)") from None
        except OSError as e:
            raise RingError(f"ring {name}: cannot open the shared-memory block: {e}") from None
        try:
            self.size = os.fstat(fd).st_size
            self._mmap = mmap.mmap(fd, self.size, prot=mmap.PROT_READ) if self.size else None
        finally:
            os.close(fd)
        self.buf = memoryview(self._mmap) if self._mmap is not None else memoryview(b"")

    def close(self) -> None:
        try:
            self.buf.release()
        except BufferError:
            pass  # arrays made from it are still alive
        if self._mmap is not None:
            try:
                self._mmap.close()
            except BufferError:
                pass  # a FrameView's image still refers to it; the mapping goes with the last reference


@dataclass
class FrameView:
    """A frame used in place in the ring. `image` is valid only while `intact()` says so: check it
    after using the pixels, and discard what was computed from them if it says False."""

    image: np.ndarray
    slot: int
    sequence: int
    _seq: np.ndarray = field(repr=False)

    def intact(self) -> bool:
        return int(self._seq[self.slot]) == 2 * self.sequence + 2


class FrameRingReader:
    """The consumer side: attaches to a writer's ring by name, reads slots, never unlinks.

    Raises RingError naming the ring if it does not exist or is not a ratrig frame ring.
    """

    def __init__(self, name: str) -> None:
        shm = _Attached(name)
        self._shm = shm
        self.name = name
        if shm.size < HEADER_BYTES:
            shm.close()
            raise RingError(f"ring {name}: {shm.size} bytes, too small for a ratrig frame ring")
        magic, version, slots, h, w, c, code = _HEADER.unpack_from(shm.buf, 0)
        if magic != MAGIC or version != VERSION or code not in _DTYPES or slots < 2:
            shm.close()
            raise RingError(f"ring {name}: not a ratrig frame ring of version {VERSION} "
                            f"(magic {magic!r}, version {version})")
        self.slots = slots
        self.shape = (h, w, c)
        self.dtype = _DTYPES[code]
        seq_off, frames_off, slot_bytes = _layout(slots, self.shape, self.dtype)
        if shm.size < frames_off + slots * slot_bytes:
            shm.close()
            raise RingError(f"ring {name}: {shm.size} bytes, expected {frames_off + slots * slot_bytes} for "
                            f"{slots} slots of {h}x{w}x{c}")
        self._seq = np.ndarray((slots,), np.uint64, shm.buf, seq_off)
        self._frames = np.ndarray((slots, h, w, c), self.dtype, shm.buf, frames_off,
                                  (slot_bytes, *_c_strides(self.shape, self.dtype)))
        self.image_shape: tuple[int, ...] = (h, w) if c == 1 else (h, w, c)
        self.lapped = 0  # frames this reader was too late for

    def _check(self, slot: int, sequence: int) -> None:
        if not 0 <= slot < self.slots:
            raise RingError(f"ring {self.name}: slot {slot} out of range 0..{self.slots - 1}")
        if sequence % self.slots != slot:
            raise RingError(f"ring {self.name}: frame {sequence} cannot be in slot {slot} of {self.slots}")

    def view(self, slot: int, sequence: int) -> FrameView:
        """Frame `sequence` in place (no copy). Raises Lapped if the slot already holds another frame;
        the caller checks `FrameView.intact()` after using the pixels."""
        self._check(slot, sequence)
        if int(self._seq[slot]) != 2 * sequence + 2:
            self.lapped += 1
            raise Lapped(f"ring {self.name}: frame {sequence} in slot {slot} was overwritten (reader lapped)")
        return FrameView(self._frames[slot].reshape(self.image_shape), slot, sequence, self._seq)

    def read(self, slot: int, sequence: int) -> np.ndarray:
        """A private copy of frame `sequence`, verified whole; Lapped if the writer overwrote it."""
        v = self.view(slot, sequence)
        out = v.image.copy()
        if not v.intact():
            self.lapped += 1
            raise Lapped(f"ring {self.name}: frame {sequence} in slot {slot} was overwritten while being read")
        return out

    def close(self) -> None:
        """Unmap (never unlink: the writer owns the block). Views taken from it become invalid."""
        if self._shm is None:
            return
        self._seq = self._frames = None  # type: ignore[assignment]
        self._shm.close()
        self._shm = None  # type: ignore[assignment]

    def __enter__(self) -> FrameRingReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
