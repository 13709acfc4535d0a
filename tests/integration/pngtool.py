#!/usr/bin/env python3
"""Small PNG and IDX helpers for the integration tests (standard library only).

    pngtool.py blank OUT W H VALUE     a W x H 8-bit gray PNG, every pixel VALUE
    pngtool.py pad IN OUT NBYTES       IN with private ancillary chunks worth
                                       NBYTES of payload inserted before IEND
                                       (a valid, slow-to-upload PNG whose
                                       pixels are unchanged)
    pngtool.py labels LABELS_IDX I...  the true labels of test images I...
    pngtool.py info IN                 "WIDTH HEIGHT" from the IHDR chunk

mkpng (build/tests/tools) makes the colour-type and hostile fixtures; this
file only makes what mkpng does not.
"""
import struct
import sys
import zlib

SIG = b"\x89PNG\r\n\x1a\n"


def chunk(ctype, data):
    return struct.pack(">I", len(data)) + ctype + data + struct.pack(">I", zlib.crc32(ctype + data))


def blank(out, w, h, value):
    raw = b"".join(b"\x00" + bytes([value]) * w for _ in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    with open(out, "wb") as f:
        f.write(SIG + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def chunks(data):
    if data[:8] != SIG:
        raise ValueError("not a PNG")
    pos = 8
    while pos + 8 <= len(data):
        n, = struct.unpack(">I", data[pos:pos + 4])
        yield pos, data[pos + 4:pos + 8], n
        pos += 12 + n


def pad(src, out, nbytes):
    data = open(src, "rb").read()
    iend = [p for p, t, _ in chunks(data) if t == b"IEND"]
    if not iend:
        raise ValueError("%s has no IEND chunk" % src)
    # "itSt": ancillary, private, safe to copy; decoders skip it unread.
    # 64 KiB pieces stay far below any sane per-chunk allocation limit.
    extra = b""
    left = nbytes
    seed = 1
    while left > 0:
        n = min(left, 65536)
        body = bytes((seed * 7 + i * 13) & 0xFF for i in range(n))
        extra += chunk(b"itSt", body)
        left -= n
        seed += 1
    with open(out, "wb") as f:
        f.write(data[:iend[0]] + extra + data[iend[0]:])


def labels(path, idx):
    with open(path, "rb") as f:
        magic, count = struct.unpack(">II", f.read(8))
        if magic != 0x801:
            raise ValueError("%s: not an IDX label file" % path)
        data = f.read()
    for i in idx:
        if not 0 <= i < count:
            raise ValueError("index %d out of range (0..%d)" % (i, count - 1))
        print(data[i])


def info(path):
    data = open(path, "rb").read()
    for p, t, _ in chunks(data):
        if t == b"IHDR":
            w, h = struct.unpack(">II", data[p + 8:p + 16])
            print(w, h)
            return
    raise ValueError("no IHDR")


def main(a):
    try:
        if len(a) == 6 and a[1] == "blank":
            blank(a[2], int(a[3]), int(a[4]), int(a[5]))
        elif len(a) == 5 and a[1] == "pad":
            pad(a[2], a[3], int(a[4]))
        elif len(a) >= 4 and a[1] == "labels":
            labels(a[2], [int(x) for x in a[3:]])
        elif len(a) == 3 and a[1] == "info":
            info(a[2])
        else:
            sys.stderr.write(__doc__)
            return 2
    except (OSError, ValueError) as e:
        sys.stderr.write("pngtool.py: %s\n" % e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
