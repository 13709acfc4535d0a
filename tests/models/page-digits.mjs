// Writes the drawing page's ten digits (tests/browser/digits.mjs) as the
// PNGs the page would upload, three pen widths by three hands each:
//   node tests/models/page-digits.mjs DIR
// names DIGIT_VARIANT.png. tests/models/check.sh asks the default model to
// read them and to find every one digit-like.
import fs from 'node:fs';
import { DIGITS, raster, hand } from '../browser/digits.mjs';

const dir = process.argv[2];
const hands = [{}, { scale: 0.8, slant: 0.15 }, { scale: 0.9, slant: -0.1, dx: 5 }];
let v = 0;
for (const pen of [3, 4, 5]) {
  for (const h of hands) {
    DIGITS.forEach((d, k) => fs.writeFileSync(`${dir}/${k}_${v}.png`, raster(hand(d, h), 112, pen)));
    v++;
  }
}
