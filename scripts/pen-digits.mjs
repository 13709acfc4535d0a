// pen-digits.mjs OUT_PREFIX - digits drawn with the drawing page's pen, as
// an IDX set: OUT_PREFIX-images-idx3-ubyte (140x140, dark ink on white, the
// PNG the page sends) and OUT_PREFIX-labels-idx1-ubyte.
//
// The strokes are the ten hand-written digits of tests/browser/digits.mjs,
// drawn by 90 "hands" each: 2 sizes x 3 slants x 3 pen widths x 5 wobbles
// (the page's own pen is 20 units of its 280-unit square, 7.1% of the
// width, round caps and joins; the widths are 0.7x, 1x and 1.4x of it).
// A wobble moves every control point by up to 3 units of the 100-unit box,
// from a fixed-seed generator (wobble 0 moves none): the same bytes on
// every run. Each image is rasterised as the page's canvas does, at its
// export size (140 px), with one pixel of anti-aliasing at the edges.
// mnist-eval --upload reads the set through the serving pipeline.
import fs from 'node:fs';
import { DIGITS, smooth, hand } from '../tests/browser/digits.mjs';

const SIZE = 140;             // the page's export: 140 x 140 pixels
const PEN = 20 / 280 * 100;   // the page's pen width in 100-unit box units
const SCALES = [0.7, 0.9];
const SLANTS = [-0.2, 0, 0.2];
const WIDTHS = [0.7, 1, 1.4];
const WOBBLES = 5;
const WOBBLE = 3;

// A 32-bit linear congruential generator (Numerical Recipes' constants):
// uniform in [0, 1), reproducible from its seed.
function lcg(seed) {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 4294967296;
  };
}

function wobble(strokes, seed) {
  if (!seed)
    return strokes;
  const rnd = lcg(seed);
  return strokes.map((s) => s.map(([x, y]) => [x + (2 * rnd() - 1) * WOBBLE,
                                               y + (2 * rnd() - 1) * WOBBLE]));
}

// Strokes (100-unit box) of pen width w (box units) into px: 0 ink .. 255
// paper. Each segment only visits the pixels near it.
function raster(strokes, w, px) {
  const k = SIZE / 100, r = w * k / 2;
  const ink = new Float32Array(SIZE * SIZE);
  for (const s of strokes) {
    const p = smooth(s).map(([x, y]) => [x * k, y * k]);
    if (p.length === 1)
      p.push(p[0]);
    for (let i = 0; i < p.length - 1; i++) {
      const [ax, ay] = p[i], [bx, by] = p[i + 1];
      const ex = bx - ax, ey = by - ay, l2 = ex * ex + ey * ey;
      const x0 = Math.max(0, Math.floor(Math.min(ax, bx) - r - 1));
      const x1 = Math.min(SIZE - 1, Math.ceil(Math.max(ax, bx) + r + 1));
      const y0 = Math.max(0, Math.floor(Math.min(ay, by) - r - 1));
      const y1 = Math.min(SIZE - 1, Math.ceil(Math.max(ay, by) + r + 1));
      for (let y = y0; y <= y1; y++) {
        for (let x = x0; x <= x1; x++) {
          const u = x + 0.5, v = y + 0.5;
          const t = l2 ? Math.max(0, Math.min(1, ((u - ax) * ex + (v - ay) * ey) / l2)) : 0;
          const d = Math.hypot(u - ax - t * ex, v - ay - t * ey);
          const c = Math.max(0, Math.min(1, r - d + 0.5));
          if (c > ink[y * SIZE + x])
            ink[y * SIZE + x] = c;
        }
      }
    }
  }
  for (let i = 0; i < SIZE * SIZE; i++)
    px[i] = Math.round(255 * (1 - ink[i]));
}

const out = process.argv[2];
if (!out || process.argv.length !== 3) {
  console.error('usage: node scripts/pen-digits.mjs OUT_PREFIX');
  process.exit(2);
}
const n = DIGITS.length * SCALES.length * SLANTS.length * WIDTHS.length * WOBBLES;
const images = Buffer.alloc(16 + n * SIZE * SIZE);
const labels = Buffer.alloc(8 + n);
images.writeUInt32BE(0x803, 0);
images.writeUInt32BE(n, 4);
images.writeUInt32BE(SIZE, 8);
images.writeUInt32BE(SIZE, 12);
labels.writeUInt32BE(0x801, 0);
labels.writeUInt32BE(n, 4);
let i = 0;
for (const scale of SCALES) {
  for (const slant of SLANTS) {
    for (const w of WIDTHS) {
      for (let seed = 0; seed < WOBBLES; seed++) {
        for (let d = 0; d < DIGITS.length; d++) {
          const strokes = hand(wobble(DIGITS[d], seed * 100 + d), { scale, slant });
          raster(strokes, PEN * w, images.subarray(16 + i * SIZE * SIZE, 16 + (i + 1) * SIZE * SIZE));
          labels[8 + i] = d;
          i++;
        }
      }
    }
  }
}
try {
  fs.writeFileSync(`${out}-images-idx3-ubyte`, images);
  fs.writeFileSync(`${out}-labels-idx1-ubyte`, labels);
} catch (e) {
  console.error(`pen-digits: ${e.message}`);
  process.exit(1);
}
console.log(`${out}: ${n} images (${DIGITS.length} digits x ${n / DIGITS.length} hands, ${SIZE}x${SIZE})`);
