"""Hostile data files for the loaders (tests/test_hostile_files.py).

Each case writes one MNIST, CIFAR-10 or PTB folder holding one bad file (truncated,
wrong magic, wrong dtype, huge declared sizes, pickles that would run code or blow up
memory) and says what the loader's error must say. `write_all` writes every case;
run as a script (`python hostile_files.py FOLDER`), this module loads each case in a
forked child under an address-space limit and prints one JSON line per case, so a
memory bomb takes neither the test process nor the machine with it."""
import codecs
import gzip
import json
import os
import pickle
import resource
import signal
import struct
import sys
import traceback
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

MB = 1 << 20
RSS_LIMIT_MB = 200        # peak RSS a hostile file may add to the process's RSS after import
ADDRESS_SPACE_EXTRA = 1 << 30   # the child's RLIMIT_AS: its address space after import + this
CPU_LIMIT_S = 10          # the child's RLIMIT_CPU: past it, SIGXCPU ends the child
MARKER = "CODE_RAN"       # a pickle that runs code would create this file in its case folder
_reconstruct = np.ndarray.__reduce__(np.zeros(1))[0]   # numpy's own, under either module name


class Case(NamedTuple):
    kind: str              # mnist, idx, cifar or ptb: which loader reads it (see load)
    write: Callable        # write(folder) -> the bad file's path
    expect: str            # a regex the error message must match: what is wrong


CASES = {}


def case(kind, expect):
    def register(write):
        CASES[write.__name__] = Case(kind, write, expect)
        return write
    return register


# ---------------------------------------------------------------- MNIST (IDX files)
IDX_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(">i4"): 0x0C,
             np.dtype(">f4"): 0x0D}
MNIST_NAMES = {"train_images": "train-images-idx3-ubyte.gz",
               "train_labels": "train-labels-idx1-ubyte.gz",
               "test_images": "t10k-images-idx3-ubyte.gz",
               "test_labels": "t10k-labels-idx1-ubyte.gz"}


def idx_header(shape, code=0x08):
    return struct.pack(">BBBB", 0, 0, code, len(shape)) + struct.pack(f">{len(shape)}I", *shape)


def idx_bytes(array):
    array = np.asarray(array)
    dtype = array.dtype.newbyteorder(">") if array.dtype.itemsize > 1 else array.dtype
    return idx_header(array.shape, IDX_CODES[dtype]) + array.astype(dtype).tobytes()


_ZEROS = []


def zeros_gzip(megabytes):
    """gzip members that inflate to `megabytes` MB of zeros (about 1 KB of file per MB)."""
    if not _ZEROS:
        _ZEROS.append(gzip.compress(bytes(64 * MB), 9))
    return _ZEROS[0] * (megabytes // 64)


def mnist_folder(folder, bad_name, raw, gz=True):
    """The four MNIST files (three tiny images each), `bad_name` replaced by raw bytes."""
    images = np.random.default_rng(0).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    for key, name in MNIST_NAMES.items():
        data = idx_bytes(images if key.endswith("images") else np.arange(3, dtype=np.uint8))
        (folder / name).write_bytes(gzip.compress(data))
    bad = folder / MNIST_NAMES[bad_name]
    bad.write_bytes(raw if not gz else raw if raw[:2] == b"\x1f\x8b" else gzip.compress(raw))
    return bad


@case("mnist", r"2147483648 images.*at most|more than")
def idx_images_huge_count_and_a_gigabyte_of_zeros(folder):
    return mnist_folder(folder, "train_images",
                        gzip.compress(idx_header((2 ** 31, 28, 28))) + zeros_gzip(1280))


@case("mnist", r"2147483648 labels.*at most|more than")
def idx_labels_huge_count_and_a_gigabyte_of_zeros(folder):
    return mnist_folder(folder, "train_labels",
                        gzip.compress(idx_header((2 ** 31,))) + zeros_gzip(1280))


@case("mnist", r"more data than")
def idx_valid_header_then_a_gigabyte_of_zeros(folder):
    body = np.zeros((3, 28, 28), np.uint8)
    return mnist_folder(folder, "train_images", gzip.compress(idx_bytes(body)) + zeros_gzip(1280))


@case("mnist", r"784,000,000 bytes.*more than a gzip file of .* bytes can hold")
def idx_images_declared_beyond_what_the_gzip_file_can_hold(folder):
    """A million images declared in a file of a few hundred bytes: deflate inflates at
    most 1032x, so the file cannot hold them (nothing is allocated for them)."""
    return mnist_folder(folder, "train_images", gzip.compress(idx_header((1_000_000, 28, 28))
                                                              + bytes(MB)))


@case("mnist", r"28x28")
def idx_shape_product_wraps_to_zero(folder):
    return mnist_folder(folder, "train_images", idx_header((2 ** 31, 2 ** 31, 4)))


@case("idx", r"bytes.*more than")
def idx_shape_product_wraps_to_zero_generic_reader(folder):
    path = folder / "bad.idx"
    path.write_bytes(idx_header((2 ** 31, 2 ** 31, 4)))
    return path


@case("mnist", r"28x28.*27x27")
def idx_images_27x27(folder):
    return mnist_folder(folder, "test_images", idx_bytes(np.zeros((3, 27, 27), np.uint8)))


@case("mnist", r"uint8.*float32")
def idx_images_float32(folder):
    return mnist_folder(folder, "train_images", idx_bytes(np.full((3, 28, 28), 0.5, ">f4")))


@case("mnist", r"uint8.*int32")
def idx_images_int32(folder):
    return mnist_folder(folder, "train_images", idx_bytes(np.full((3, 28, 28), 200, ">i4")))


@case("mnist", r"integer.*float32")
def idx_labels_float32(folder):
    return mnist_folder(folder, "train_labels", idx_bytes(np.array([1.7, 2.2, 8.9], ">f4")))


@case("mnist", r"0-9.*-1")
def idx_labels_negative_int8(folder):
    return mnist_folder(folder, "test_labels", idx_bytes(np.array([-1, 2, 3], np.int8)))


@case("mnist", r"0-9.*12")
def idx_labels_out_of_range(folder):
    return mnist_folder(folder, "train_labels", idx_bytes(np.array([0, 12, 3], np.uint8)))


@case("mnist", r"3 images.*2 labels")
def idx_counts_differ(folder):
    return mnist_folder(folder, "train_labels", idx_bytes(np.array([0, 1], np.uint8)))


@case("mnist", r"holds no images")
def idx_no_images(folder):
    bad = mnist_folder(folder, "test_images", idx_bytes(np.zeros((0, 28, 28), np.uint8)))
    no_labels = gzip.compress(idx_bytes(np.zeros(0, np.uint8)))
    (folder / MNIST_NAMES["test_labels"]).write_bytes(no_labels)
    return bad


@case("mnist", r"truncated")
def idx_truncated_body(folder):
    return mnist_folder(folder, "train_images", idx_bytes(np.zeros((3, 28, 28), np.uint8))[:-100])


@case("mnist", r"truncated|corrupt")
def idx_truncated_gzip(folder):
    return mnist_folder(folder, "train_images",
                        gzip.compress(idx_bytes(np.zeros((3, 28, 28), np.uint8)))[:40])


@case("mnist", r"magic")
def idx_wrong_magic(folder):
    return mnist_folder(folder, "test_images", b"\x12\x34\x08\x03" + bytes(100))


@case("mnist", r"magic|truncated")
def idx_empty(folder):
    return mnist_folder(folder, "test_labels", b"")


@case("mnist", r"not a regular file")
def idx_device_instead_of_a_file(folder):
    bad = mnist_folder(folder, "train_images", b"")
    bad.unlink()
    os.symlink("/dev/zero", bad.with_suffix(""))   # the plain (not gzipped) name is found too
    return bad.with_suffix("")


# ---------------------------------------------------------------- CIFAR-10 (pickles)
class Reduce:
    """Pickles as fn(*args) (then BUILD with state): a way to write any opcode stream."""

    def __init__(self, fn, args, state=None):
        self.reduced = (fn, args) if state is None else (fn, args, state)

    def __reduce__(self):
        return self.reduced


def cifar_folder(folder, raw):
    """cifar-10-batches-py with tiny good batches; data_batch_1 holds raw."""
    batches = folder / "cifar-10-batches-py"
    batches.mkdir()
    good = pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}, protocol=2)
    for name in [f"data_batch_{i}" for i in range(2, 6)] + ["test_batch"]:
        (batches / name).write_bytes(good)
    (batches / "data_batch_1").write_bytes(raw)
    return batches / "data_batch_1"


def batch(data=None, labels=(0, 1), **extra):
    n = 2 if labels is None else len(labels)
    data = np.zeros((n, 3072), np.uint8) if data is None else data
    return {b"data": data, b"labels": labels if labels is None else list(labels),
            **{k.encode(): v for k, v in extra.items()}}


@case("cifar", r"data must be a uint8 array")
def cifar_data_is_memo_references_to_one_megabyte(folder):
    big = bytes(MB)
    return cifar_folder(folder, pickle.dumps(batch([big] * 3000, [0] * 3000), protocol=4))


@case("cifar", r"labels must be|more than")
def cifar_labels_are_memo_references_to_one_long_list(folder):
    row = [0] * 250_000
    return cifar_folder(folder, pickle.dumps(batch(labels=[row] * 600), protocol=4))


@case("cifar", r"1099511627776.*more than|too large")
def cifar_reconstruct_of_a_huge_shape(folder):
    huge = Reduce(_reconstruct, (np.ndarray, (2 ** 40,), b"b"))
    return cifar_folder(folder, pickle.dumps(batch(huge), protocol=2))


@case("cifar", r"not callable")
def cifar_ndarray_called_with_a_huge_shape(folder):
    huge = Reduce(np.ndarray, ((2 ** 40,),))
    return cifar_folder(folder, pickle.dumps(batch(huge), protocol=2))


@case("cifar", r"NEWOBJ")
def cifar_ndarray_newobj_of_a_huge_shape(folder):
    shape = b"\x8a\x06" + (2 ** 40).to_bytes(6, "little") + b"\x85\x85"   # ((2**40,),)
    return cifar_folder(folder, b"\x80\x02cnumpy\nndarray\n" + shape + b"\x81.")


@case("cifar", r"object|refusing")
def cifar_object_array_of_a_huge_shape(folder):
    state = (1, (2 ** 33,), np.dtype(object), False, [])
    huge = Reduce(_reconstruct, (np.ndarray, (0,), b"b"), state)
    return cifar_folder(folder, pickle.dumps(batch(huge), protocol=2))


@case("cifar", r"more than|too large")
def cifar_byteswapped_arrays_sharing_one_buffer(folder):
    big, args, swapped = bytes(MB), (np.ndarray, (0,), b"b"), np.dtype(">u2")
    copies = [Reduce(_reconstruct, args, (1, (MB // 2,), swapped, False, big)) for _ in range(1200)]
    return cifar_folder(folder, pickle.dumps(batch(junk=copies), protocol=4))


@case("cifar", r"more than|too large")
def cifar_byteswapped_builds_on_protocol_5_arrays(folder):
    frombuffer = np.ndarray.__reduce_ex__(np.zeros(1), 5)[0]
    big, args, swapped = bytes(MB), (bytearray(), np.dtype("u1"), (0,), "C"), np.dtype(">u2")
    copies = [Reduce(frombuffer, args, (1, (MB // 2,), swapped, False, big)) for _ in range(1200)]
    return cifar_folder(folder, pickle.dumps(batch(junk=copies), protocol=5))


@case("cifar", r"more than|too large")
def cifar_codecs_encode_of_one_string_many_times(folder):
    args = ("\x00" * MB, "latin1")
    return cifar_folder(folder, pickle.dumps(batch(junk=[Reduce(codecs.encode, args)
                                                         for _ in range(1200)]), protocol=4))


@case("cifar", r"refusing")
def cifar_codecs_encode_with_another_codec(folder):
    return cifar_folder(folder, pickle.dumps(batch(junk=Reduce(codecs.encode, ("x", "rot13"))),
                                             protocol=2))


@case("cifar", r"memo|more than|too large")
def cifar_memo_index_near_two_to_the_31(folder):
    return cifar_folder(folder, b"\x80\x02N" + b"r" + struct.pack("<I", 2 ** 31 - 1) + b".")


@case("cifar", r"truncated|remain|corrupt")
def cifar_bytes_of_a_terabyte_declared(folder):
    return cifar_folder(folder, b"\x80\x04\x8e" + struct.pack("<Q", 1 << 40) + b"xyz.")


@case("cifar", r"more than|too large")
def cifar_two_million_empty_sets(folder):
    return cifar_folder(folder, b"\x80\x04](" + b"\x8f" * 2_000_000 + b"e.")


def _run_code(folder):
    return f"touch {folder / MARKER}"


@case("cifar", r"refusing to load .*system")
def cifar_global_os_system(folder):
    return cifar_folder(folder, pickle.dumps(batch(Reduce(os.system, (_run_code(folder),))),
                                             protocol=2))


@case("cifar", r"refusing to load .*system")
def cifar_stack_global_os_system(folder):
    return cifar_folder(folder, pickle.dumps(batch(Reduce(os.system, (_run_code(folder),))),
                                             protocol=4))


@case("cifar", r"refusing to load .*eval")
def cifar_builtins_eval(folder):
    code = f"__import__('os').system({_run_code(folder)!r})"
    return cifar_folder(folder, pickle.dumps(batch(Reduce(eval, (code,))), protocol=2))


@case("cifar", r"refusing to load .*system")
def cifar_inst_opcode_os_system(folder):
    return cifar_folder(folder, f"(S'{_run_code(folder)}'\nios\nsystem\n.".encode())


@case("cifar", r"persistent")
def cifar_persistent_id(folder):
    return cifar_folder(folder, b"\x80\x02K\x01Q.")


@case("cifar", r"labels must be")
def cifar_labels_none(folder):
    return cifar_folder(folder, pickle.dumps(batch(labels=None), protocol=2))


@case("cifar", r"0-9.*9223372036854775808")
def cifar_labels_overflow_int64(folder):
    return cifar_folder(folder, pickle.dumps(batch(labels=[0, 2 ** 63]), protocol=2))


@case("cifar", r"labels must be.*str")
def cifar_labels_are_strings(folder):
    return cifar_folder(folder, pickle.dumps(batch(labels=["cat", "dog"]), protocol=2))


@case("cifar", r"labels must be.*float")
def cifar_label_is_a_float(folder):
    return cifar_folder(folder, pickle.dumps(batch(labels=[2.7, 1]), protocol=2))


@case("cifar", r"labels must be.*list")
def cifar_labels_nested_thirty_thousand_deep(folder):
    placeholder = b"labels-go-here"                  # protocol 3: SHORT_BINBYTES, no frames
    raw = pickle.dumps(batch(labels=None) | {b"labels": placeholder}, protocol=3)
    chain = b"]" * 30_000 + b"a" * 29_999             # each list appended to the one below
    nested = b"(" + chain + chain + b"l"             # two of them: as many labels as images
    return cifar_folder(folder, raw.replace(b"C\x0e" + placeholder, nested))


@case("cifar", r"data must be a uint8 array.*float32")
def cifar_data_float32(folder):
    return cifar_folder(folder, pickle.dumps(batch(np.zeros((2, 3072), np.float32)), protocol=2))


@case("cifar", r"2 images but 3 labels")
def cifar_counts_differ(folder):
    return cifar_folder(folder, pickle.dumps(batch(np.zeros((2, 3072), np.uint8), [0, 1, 2])))


@case("cifar", r"not a CIFAR-10 batch")
def cifar_truncated(folder):
    return cifar_folder(folder, pickle.dumps(batch(), protocol=2)[:-40])


@case("cifar", r"not a CIFAR-10 batch")
def cifar_empty(folder):
    return cifar_folder(folder, b"")


@case("cifar", r"not a CIFAR-10 batch")
def cifar_not_a_dict(folder):
    return cifar_folder(folder, pickle.dumps([1, 2, 3]))


@case("cifar", r"more than 67,108,864 bytes")
def cifar_file_larger_than_any_batch(folder):
    bad = cifar_folder(folder, b"")
    with open(bad, "r+b") as f:
        f.truncate((64 << 20) + 1)               # sparse where the file system allows
    return bad


@case("cifar", r"not a regular file")
def cifar_device_instead_of_a_file(folder):
    bad = cifar_folder(folder, b"")
    bad.unlink()
    os.symlink("/dev/zero", bad)
    return bad


# raw opcodes, for pickles pickle.dumps cannot write (an object changed after its use) or
# would take minutes to build (a dict of colliding keys)
def op_global(module, name):
    return f"c{module}\n{name}\n".encode()


def op_int(n):
    return pickle.dumps(n, protocol=2)[2:-1]      # BININT*, or LONG1 for a large one


def op_bytes(data):
    return b"B" + struct.pack("<I", len(data)) + data


def op_str(text):
    return b"X" + struct.pack("<I", len(text.encode())) + text.encode()


def raw_batch(data_ops, labels_ops=b"](K\x00e", before=b""):
    """A batch {b'data': <data_ops>, b'labels': <labels_ops>}, `before` ahead of it."""
    return b"\x80\x04" + before + b"}(" + op_bytes(b"data") + data_ops + op_bytes(b"labels") \
        + labels_ops + b"u."


def padding(megabytes):
    """Bytes pushed and popped: a file of this size may hold this much more."""
    return op_bytes(bytes(megabytes * MB)) + b"0"


RECONSTRUCT = op_global("numpy.core.multiarray", "_reconstruct") + op_global("numpy", "ndarray")


def dtype_state(names=b"N", fields=b"N", flags=0):
    """numpy.dtype's BUILD state (3, '|', None, names, fields, -1, -1, flags)."""
    return (b"(" + op_int(3) + op_str("|") + b"N" + names + fields + op_int(-1) + op_int(-1)
            + op_int(flags) + b"t")


@case("cifar", r"refusing dtype")
def cifar_dtype_rebuilt_after_an_array_uses_it(folder):
    """numpy.dtype('u1') (memo 1) makes an array, then a second BUILD gives it a field of
    2**30 bytes and the object flag: the array's dtype changed after every check."""
    dtype = op_global("numpy", "dtype") + op_str("u1") + b"\x89\x88\x87Rq\x01" + dtype_state() + b"b"
    array = (RECONSTRUCT + op_int(0) + b"\x85" + op_str("b") + b"\x87R(" + op_int(1) + op_int(1)
             + op_int(3072) + b"\x86h\x01\x89" + op_bytes(bytes(3072)) + b"tb")
    field = b"}" + op_str("a") + b"h\x01" + op_int(1 << 30) + b"\x86s"
    rebuild = b"h\x01" + dtype_state(op_str("a") + b"\x85", field, flags=1) + b"b0"
    return cifar_folder(folder, raw_batch(dtype + b"0" + array + rebuild))


@case("cifar", r"dimension")
def cifar_shape_of_memo_references_to_a_huge_integer(folder):
    """32 references to one 3.2-million-bit integer: their product took minutes."""
    huge = b"\x8b" + struct.pack("<i", 400_000) + b"\xff" * 399_999 + b"\x7f"
    shape = b"(" + huge + b"q\x01" + b"h\x01" * 31 + b"t"
    return cifar_folder(folder, raw_batch(RECONSTRUCT + shape + op_str("u1") + b"\x87R"))


def empty_array(rows):
    return RECONSTRUCT + op_int(rows) + op_int(3072) + b"\x86" + op_str("u1") + b"\x87R"


@case("cifar", r"refusing to write into an array")
def cifar_setitem_into_an_array(folder):
    return cifar_folder(folder, raw_batch(empty_array(1) + b")K\x05s"))


@case("cifar", r"entries|refusing to write into an array")
def cifar_setitem_into_an_array_forty_thousand_times(folder):
    """array[()] = 0 on a 16 MB array 40,000 times: a memset of 16 MB per 3 opcodes."""
    return cifar_folder(folder, raw_batch(empty_array(16 * MB // 3072) + b")K\x00s" * 40_000,
                                          before=padding(3)))


XXPRIME_1, XXPRIME_2, XXPRIME_5 = 11400714785074694791, 14029467366897019727, 2870177450012600261
HASH_MODULUS = (1 << 61) - 1          # an int's hash is its value modulo this


def colliding_pairs(n):
    """n pairs (a, b) of ints whose tuple hashes are equal: Python's tuple hash (xxHash's
    rounds) adds b's hash times XXPRIME_2 to a state that depends on a alone, so b is
    solved for (it must be an int whose hash is that value: about 1 a in 4 has one)."""
    mask, pairs, a = (1 << 64) - 1, [], 0
    while len(pairs) < n:
        state = (XXPRIME_5 + a * XXPRIME_2) & mask
        state = (((state << 31) | (state >> 33)) & mask) * XXPRIME_1 & mask
        lane = -state * pow(XXPRIME_2, -1, 1 << 64) & mask
        b = lane if lane < HASH_MODULUS else lane - (1 << 64)
        if -HASH_MODULUS < b and b != -1:
            pairs.append((a, b))
        a += 1
    return pairs


def colliding_keys(kind, n):
    """The opcodes of n keys of one hash: ints k * (2**61 - 1), or pairs of ints."""
    if kind == "ints":
        return [op_int(k * HASH_MODULUS) for k in range(1, n + 1)]
    return [op_int(a) + op_int(b) + b"\x86" for a, b in colliding_pairs(n)]


@case("cifar", r"entries")
def cifar_dict_of_fifty_thousand_colliding_integer_keys(folder):
    return cifar_folder(folder, raw_batch(b"N", before=b"}(" + b"N".join(
        colliding_keys("ints", 50_000)) + b"Nu0"))


@case("cifar", r"entries")
def cifar_set_of_fifty_thousand_colliding_integer_keys(folder):
    return cifar_folder(folder, raw_batch(b"N", before=b"\x8f(" + b"".join(
        colliding_keys("ints", 50_000)) + b"\x900"))


@case("cifar", r"entries")
def cifar_dict_of_forty_thousand_colliding_pair_keys(folder):
    return cifar_folder(folder, raw_batch(b"N", before=b"}(" + b"N".join(
        colliding_keys("pairs", 40_000)) + b"Nu0"))


@case("cifar", r"more than")
def cifar_set_of_six_million_integers(folder):
    """6.5 million BININTs (5 bytes each) in one set, with padding that lets a 36-byte
    charge per integer pass: it grew the process by 773 MB."""
    ints = np.zeros((6_500_000, 5), np.uint8)
    ints[:, 0] = ord("J")
    ints[:, 1:] = np.arange(6_500_000, dtype="<i4").view(np.uint8).reshape(-1, 4)
    raw = b"\x80\x04" + padding(31) + b"\x8f(" + ints.tobytes() + b"\x900N."
    return cifar_folder(folder, raw)


# ---------------------------------------------------------------- PTB (text)
def ptb_folder(folder, split, raw):
    """ptb.{train,valid,test}.txt of 200 words each; `split` holds raw bytes."""
    for name in ("train", "valid", "test"):
        (folder / f"ptb.{name}.txt").write_text("the cat sat on the mat\n" * 40)
    bad = folder / f"ptb.{split}.txt"
    bad.write_bytes(raw)
    return bad


@case("ptb", r"no words|empty")
def ptb_empty_valid_split(folder):
    return ptb_folder(folder, "valid", b"")


@case("ptb", r"no words|empty")
def ptb_blank_lines_only(folder):
    return ptb_folder(folder, "train", b"\n \n\t\n")


@case("ptb", r"8 tokens.*one row of 20")
def ptb_valid_split_shorter_than_a_batch(folder):
    return ptb_folder(folder, "valid", b"a b c\nd e f\n")


@case("ptb", r"UTF-8")
def ptb_invalid_utf8(folder):
    return ptb_folder(folder, "test", b"ok words\n\xff\xfe\x00bad\n")


@case("ptb", r"UTF-8")
def ptb_truncated_inside_a_character(folder):
    return ptb_folder(folder, "train", "the caf\u00e9".encode()[:-1])


@case("ptb", r"UTF-8")
def ptb_gzip_under_a_text_name(folder):
    return ptb_folder(folder, "train", gzip.compress(b"the cat sat\n" * 100))


@case("ptb", r"a word of more than")
def ptb_256_megabytes_of_nul_characters(folder):
    bad = ptb_folder(folder, "train", b"")
    with open(bad, "r+b") as f:
        f.truncate(256 * MB)                     # sparse where the file system allows
    return bad


@case("ptb", r"not a regular file")
def ptb_device_instead_of_a_file(folder):
    bad = ptb_folder(folder, "train", b"")
    bad.unlink()
    os.symlink("/dev/zero", bad)
    return bad


@case("ptb", r"not a regular file|directory")
def ptb_folder_instead_of_a_file(folder):
    bad = ptb_folder(folder, "valid", b"")
    bad.unlink()
    bad.mkdir()
    return bad


# ---------------------------------------------------------------- running the cases
BAD_FILE = "BAD_FILE"   # each case folder names its bad file in this file


def write_all(root):
    """Each case in root/<name>."""
    for name, c in CASES.items():
        (root / name).mkdir()
        (root / name / BAD_FILE).write_text(str(c.write(root / name)))


def bad_file(folder):
    """The path of the bad file write_all wrote in a case's folder."""
    return Path((folder / BAD_FILE).read_text())


def load(kind, folder):
    """What the loaders do with a folder of this kind (both splits; PTB also batchified)."""
    from mininet.data import CIFAR10Dataset, Corpus, MNISTDataset, batchify, read_idx
    if kind == "mnist":
        for split in ("train", "test"):
            MNISTDataset.load(split, folder, download=False)
    elif kind == "idx":
        read_idx(folder / "bad.idx", 3)
    elif kind == "cifar":
        CIFAR10Dataset(folder, train=True)
        CIFAR10Dataset(folder, train=False)
    else:
        corpus = Corpus(folder, download=False)
        batchify(corpus.train, 20)
        batchify(corpus.valid, 20)


def _address_space():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))


def _cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _child(kind, folder, out):
    """Load under RLIMIT_AS (address space now + 1 GB) and RLIMIT_CPU (CPU_LIMIT_S, no core
    file); report error, RSS growth and CPU time."""
    from mininet.data import CIFARError, CorpusError, MNISTError
    signal.alarm(60)
    limit = _address_space() + ADDRESS_SPACE_EXTRA
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CPU, (int(_cpu_seconds()) + CPU_LIMIT_S,) * 2)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cpu0 = _cpu_seconds()
    result = {"error": None, "message": ""}
    try:
        load(kind, folder)
    except (MNISTError, CIFARError, CorpusError) as e:
        result = {"error": type(e).__name__, "message": str(e)}
    except BaseException as e:   # noqa: B036 - MemoryError, RecursionError: all are reported
        result = {"error": "uncaught " + type(e).__name__, "message": str(e)[:500],
                  "traceback": traceback.format_exc()[-2000:]}
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result["rss_growth_mb"] = (rss1 - rss0) / 1024
    result["cpu_s"] = round(_cpu_seconds() - cpu0, 2)
    os.write(out, json.dumps(result).encode())


def run_case(name, folder):
    """Fork; the child loads the case; {error, message, rss_growth_mb, cpu_s, code_ran}."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            _child(CASES[name].kind, folder, w)
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        raw = f.read()
    _, status = os.waitpid(pid, 0)
    died = signal.Signals(os.WTERMSIG(status)).name if os.WIFSIGNALED(status) else status
    result = json.loads(raw) if raw else {"error": f"child died ({died})", "message": "",
                                          "rss_growth_mb": None, "cpu_s": None}
    result["code_ran"] = (folder / MARKER).exists()
    return result


def main(root, names=()):
    """Each case written in root by write_all (or those named), one JSON line each."""
    import mininet.data  # noqa: F401 - the baseline is the process after import
    for name in names or CASES:
        result = run_case(name, Path(root) / name)
        print(json.dumps({"case": name, **result}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
