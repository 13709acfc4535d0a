// Ten hand-written digits as stroke paths: coordinates in a 100x100 box
// (y down), written the way a person moves a pen, not taken from any data
// set. smooth() turns the sparse points into a dense pen path; raster()
// renders strokes into a gray PNG for the upload tests.
import zlib from 'node:zlib';

export const DIGITS = [
  // 0: one loop, started at the top, closing past its start
  [[[52, 10], [40, 13], [30, 22], [24, 36], [22, 52], [25, 68], [32, 80], [43, 88],
    [55, 89], [66, 84], [74, 72], [78, 56], [77, 40], [72, 25], [63, 14], [52, 10], [46, 13]]],
  // 1: a slightly slanted bar
  [[[57, 10], [56, 28], [54, 48], [52, 68], [50, 90]]],
  // 2: hook, diagonal, base
  [[[26, 28], [30, 18], [40, 11], [53, 10], [64, 15], [70, 25], [68, 38], [58, 52],
    [44, 66], [30, 80], [22, 90], [36, 89], [52, 88], [66, 88], [80, 89]]],
  // 3: two bowls, one stroke
  [[[28, 18], [38, 11], [52, 10], [64, 14], [70, 24], [66, 35], [55, 44], [44, 48],
    [56, 50], [68, 56], [74, 67], [72, 79], [62, 88], [48, 91], [34, 88], [25, 80]]],
  // 4: open top: down-left and across, then the stem
  [[[50, 10], [42, 26], [34, 42], [26, 56], [22, 64], [38, 64], [56, 63], [74, 62], [82, 61]],
   [[64, 30], [63, 48], [62, 66], [61, 80], [60, 92]]],
  // 5: down and round the bowl, then the flag on top
  [[[34, 12], [32, 26], [30, 40], [28, 48], [40, 44], [54, 44], [66, 50], [73, 61],
    [72, 74], [64, 85], [50, 90], [36, 88], [26, 80]],
   [[34, 12], [48, 11], [62, 10], [74, 10]]],
  // 6: the long left curve into a closed bowl
  [[[66, 10], [54, 16], [42, 28], [33, 42], [27, 58], [27, 72], [33, 84], [45, 90],
    [58, 88], [68, 78], [69, 66], [62, 56], [50, 52], [38, 56], [30, 66]]],
  // 7: bar and a long diagonal
  [[[20, 14], [36, 13], [52, 12], [68, 12], [80, 12], [72, 26], [64, 40], [56, 56],
    [50, 72], [46, 90]]],
  // 8: an S and back up, crossing in the middle
  [[[62, 18], [52, 11], [40, 12], [32, 20], [34, 32], [44, 42], [56, 50], [66, 60],
    [68, 73], [60, 86], [48, 90], [36, 86], [30, 74], [34, 62], [44, 52], [56, 44],
    [64, 34], [66, 24], [62, 18]]],
  // 9: a loop, then the stem down its right side
  [[[70, 22], [62, 13], [50, 11], [38, 15], [31, 26], [32, 38], [40, 46], [52, 47],
    [63, 41], [70, 30], [70, 22], [70, 40], [68, 58], [66, 74], [64, 90]]],
];

// Catmull-Rom through the points, about `step` units between samples.
export function smooth(points, step = 2) {
  if (points.length < 2)
    return points.slice();
  const out = [points[0]];
  for (let i = 0; i < points.length - 1; i++) {
    const p0 = points[Math.max(0, i - 1)], p1 = points[i];
    const p2 = points[i + 1], p3 = points[Math.min(points.length - 1, i + 2)];
    const n = Math.max(1, Math.ceil(Math.hypot(p2[0] - p1[0], p2[1] - p1[1]) / step));
    for (let k = 1; k <= n; k++) {
      const t = k / n, t2 = t * t, t3 = t2 * t;
      const f = (a, b, c, d) => 0.5 * (2 * b + (-a + c) * t + (2 * a - 5 * b + 4 * c - d) * t2 +
                                       (-a + 3 * b - 3 * c + d) * t3);
      out.push([f(p0[0], p1[0], p2[0], p3[0]), f(p0[1], p1[1], p2[1], p3[1])]);
    }
  }
  return out;
}

// An affine "hand": scale, slant (x shifts with height) and offset, so the
// phone draws the same digits a little differently from the desktop.
export function hand(strokes, { scale = 1, slant = 0, dx = 0, dy = 0 } = {}) {
  return strokes.map((s) => s.map(([x, y]) => [
    50 + (x - 50) * scale + slant * (50 - y) + dx,
    50 + (y - 50) * scale + dy,
  ]));
}

function crcTable() {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++)
      c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
}
const CRC = crcTable();
function crc32(buf) {
  let c = 0xffffffff;
  for (const b of buf)
    c = CRC[(c ^ b) & 255] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
function chunk(type, data) {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const td = Buffer.concat([Buffer.from(type, 'latin1'), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(td));
  return Buffer.concat([len, td, crc]);
}

// An 8-bit gray PNG of w x h pixels (row-major bytes).
export function grayPng(pixels, w, h) {
  const raw = Buffer.alloc((w + 1) * h);
  for (let y = 0; y < h; y++) {
    raw[y * (w + 1)] = 0;   // filter: none
    for (let x = 0; x < w; x++)
      raw[y * (w + 1) + 1 + x] = pixels[y * w + x];
  }
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0);
  ihdr.writeUInt32BE(h, 4);
  ihdr[8] = 8;    // bit depth
  ihdr[9] = 0;    // gray
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr), chunk('IDAT', zlib.deflateSync(raw)), chunk('IEND', Buffer.alloc(0)),
  ]);
}

// Dark strokes of radius r (box units) on white, size x size pixels.
export function raster(strokes, size = 112, r = 4) {
  const px = new Uint8Array(size * size).fill(255);
  const segs = [];
  for (const s of strokes) {
    const p = smooth(s);
    for (let i = 0; i < p.length - 1; i++)
      segs.push([p[i], p[i + 1]]);
  }
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const u = (x + 0.5) * 100 / size, v = (y + 0.5) * 100 / size;
      let d = Infinity;
      for (const [a, b] of segs) {
        const ex = b[0] - a[0], ey = b[1] - a[1];
        const l2 = ex * ex + ey * ey;
        const t = l2 ? Math.max(0, Math.min(1, ((u - a[0]) * ex + (v - a[1]) * ey) / l2)) : 0;
        d = Math.min(d, Math.hypot(u - a[0] - t * ex, v - a[1] - t * ey));
      }
      // One pixel of anti-aliasing at the edge.
      const ink = Math.max(0, Math.min(1, r - d + 0.5));
      px[y * size + x] = Math.round(255 * (1 - ink));
    }
  }
  return grayPng(px, size, size);
}
