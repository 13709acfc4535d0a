/* mnist-glyphs - printed characters rendered from Debian's font packages,
 * written as MNIST IDX files (28x28 bytes, white ink on black, 0..255):
 * sets to measure a model beyond handwritten scans, and letters to show it
 * what is not a digit.
 *
 *   mnist-glyphs --chars digits|letters --set train|eval [--except CHARS] --out DIR
 *     writes DIR/CHARS-SET-images-idx3-ubyte and DIR/CHARS-SET-labels-idx1-ubyte
 *
 * Labels: digits 0..9 are the digit; letters A..Z are 0..25, a..z 26..51,
 * also when --except leaves some characters out (the outliers of the
 * candidate CNNs W5 to W7 in models/README.md leave out I, O, l and o,
 * which printed 1s and 0s look like).
 * The fonts come from a list file (tools/glyph-fonts.txt): one font per
 * line, "SET STYLE PACKAGE FILE", the sets split by font so that no face
 * (nor one derived from it) is on both sides.
 *
 * Each character is drawn the way MNIST's digits were prepared: rendered
 * large with FreeType's anti-aliasing (outlines unhinted, so the result
 * does not depend on a hinting engine's version), then the same
 * img_prep_mnist an upload goes through: cropped to the ink, fitted into
 * 20x20 keeping the aspect ratio (area averaging), centred by centre of
 * mass in 28x28. Variants, for every font and character, in this order:
 *   rendering size  GLYPH_PX: a coarse 28 px em (its anti-aliasing is then
 *                   scaled up, as a small print scanned) and a fine 96 px
 *   stroke width    GLYPH_BOLD: the outline as drawn, emboldened by 4% and
 *                   by 8% of the em (FT_Outline_Embolden), thin to heavy
 * Image order: font (list order), size, stroke, character. No randomness:
 * two runs on the same fonts and FreeType give the same bytes. */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ft2build.h>
#include FT_FREETYPE_H
#include FT_OUTLINE_H

#include "cli/opt.h"
#include "image/image.h"
#include "nn/idx.h"

#define VERSION "1.0.0"

static const int GLYPH_PX[] = {28, 96};
static const double GLYPH_BOLD[] = {0.0, 0.04, 0.08};
#define NPX ((int)(sizeof GLYPH_PX / sizeof GLYPH_PX[0]))
#define NBOLD ((int)(sizeof GLYPH_BOLD / sizeof GLYPH_BOLD[0]))
/* Blank border around the rendered glyph: img_prep_mnist reads the
 * background from the image's border ring. */
#define MARGIN 4

typedef struct {
    char set[16], style[16], package[64], path[1024];
    int line;
} glyph_font;

static const char DIGITS[] = "0123456789";
static const char LETTERS[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/* The fonts of list file `file` whose SET is `set`, in file order, at most
 * max (0: all). 0, or -1 + err. *fonts is the caller's to free. */
static int fonts_load(const char *file, const char *set, int max, glyph_font **fonts, int *n,
                      char *err, size_t errlen)
{
    *fonts = NULL;
    *n = 0;
    FILE *f = fopen(file, "r");
    if (!f) {
        snprintf(err, errlen, "%s: %s", file, strerror(errno));
        return -1;
    }
    char line[1200];
    int cap = 0, lineno = 0, rc = -1;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        size_t len = strlen(line);
        if (len == sizeof line - 1 && line[len - 1] != '\n') {
            snprintf(err, errlen, "%s:%d: line too long", file, lineno);
            goto done;
        }
        while (len && (line[len - 1] == '\n' || line[len - 1] == '\r' || line[len - 1] == ' '))
            line[--len] = 0;
        char *p = line + strspn(line, " \t");
        if (!*p || *p == '#') continue;
        glyph_font g;
        memset(&g, 0, sizeof g);
        int used = 0;
        if (sscanf(p, "%15s %15s %63s %n", g.set, g.style, g.package, &used) != 3 || !p[used]) {
            snprintf(err, errlen, "%s:%d: want SET STYLE PACKAGE FILE", file, lineno);
            goto done;
        }
        if (strcmp(g.set, "train") && strcmp(g.set, "eval")) {
            snprintf(err, errlen, "%s:%d: set '%s' is neither train nor eval", file, lineno, g.set);
            goto done;
        }
        if (strlen(p + used) >= sizeof g.path) {
            snprintf(err, errlen, "%s:%d: file name too long", file, lineno);
            goto done;
        }
        strcpy(g.path, p + used);
        g.line = lineno;
        if (strcmp(g.set, set) || (max > 0 && *n >= max)) continue;
        if (*n == cap) {
            int nc = cap ? 2 * cap : 16;
            glyph_font *nf = realloc(*fonts, sizeof *nf * nc);
            if (!nf) {
                snprintf(err, errlen, "out of memory");
                goto done;
            }
            *fonts = nf;
            cap = nc;
        }
        (*fonts)[(*n)++] = g;
    }
    if (ferror(f)) {
        snprintf(err, errlen, "%s: read error", file);
        goto done;
    }
    if (!*n) {
        snprintf(err, errlen, "%s: no font in set '%s'", file, set);
        goto done;
    }
    rc = 0;
done:
    fclose(f);
    if (rc) {
        free(*fonts);
        *fonts = NULL;
        *n = 0;
    }
    return rc;
}

/* A growable gray canvas for one rendered glyph. */
typedef struct {
    uint8_t *px;
    size_t cap;
} canvas;

/* Character ch of face at em size px, emboldened by bold * em, prepared
 * into out[784] (0..255). 0, or -1 + err (no such glyph, an empty one,
 * FreeType's error, memory). */
static int glyph_render(FT_Face face, unsigned long ch, int px, double bold, canvas *cv,
                        uint8_t out[784], char *err, size_t errlen)
{
    FT_Error fe = FT_Set_Pixel_Sizes(face, 0, (FT_UInt)px);
    FT_UInt gi = fe ? 0 : FT_Get_Char_Index(face, ch);
    if (fe) {
        snprintf(err, errlen, "cannot set a %d px size", px);
        return -1;
    }
    if (!gi) {
        snprintf(err, errlen, "has no glyph for '%c'", (int)ch);
        return -1;
    }
    FT_GlyphSlot s = face->glyph;
    if (FT_Load_Glyph(face, gi, FT_LOAD_NO_HINTING | FT_LOAD_NO_BITMAP) ||
        s->format != FT_GLYPH_FORMAT_OUTLINE) {
        snprintf(err, errlen, "glyph '%c' has no outline", (int)ch);
        return -1;
    }
    if (bold > 0 && FT_Outline_Embolden(&s->outline, (FT_Pos)lround(bold * px * 64))) {
        snprintf(err, errlen, "cannot embolden '%c'", (int)ch);
        return -1;
    }
    if (FT_Render_Glyph(s, FT_RENDER_MODE_NORMAL) || s->bitmap.pixel_mode != FT_PIXEL_MODE_GRAY) {
        snprintf(err, errlen, "cannot render '%c' in 8-bit gray", (int)ch);
        return -1;
    }
    const FT_Bitmap *b = &s->bitmap;
    if (!b->rows || !b->width) {
        snprintf(err, errlen, "glyph '%c' is empty", (int)ch);
        return -1;
    }
    uint32_t w = b->width + 2 * MARGIN, h = b->rows + 2 * MARGIN;
    size_t need = (size_t)w * h;
    if (need > cv->cap) {
        uint8_t *np = realloc(cv->px, need);
        if (!np) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        cv->px = np;
        cv->cap = need;
    }
    memset(cv->px, 0, need);
    /* 256 gray levels: FreeType's coverage is the ink, 0 the paper. */
    int maxv = b->num_grays > 1 ? b->num_grays - 1 : 255;
    for (unsigned r = 0; r < b->rows; r++) {
        const unsigned char *src = b->buffer + (ptrdiff_t)r * b->pitch;
        uint8_t *dst = cv->px + (size_t)(r + MARGIN) * w + MARGIN;
        for (unsigned c = 0; c < b->width; c++) dst[c] = (uint8_t)(src[c] * 255 / maxv);
    }
    float f[784];
    char perr[128];
    if (img_prep_mnist(cv->px, w, h, f, perr, sizeof perr) != IMG_OK) {
        snprintf(err, errlen, "'%c': %s", (int)ch, perr);
        return -1;
    }
    for (int i = 0; i < 784; i++) out[i] = (uint8_t)lrintf(255.0f * f[i]);
    return 0;
}

int main(int argc, char **argv)
{
    const char *chars = NULL, *set = NULL, *out = NULL, *list = "tools/glyph-fonts.txt";
    const char *except = "";
    int max_fonts = 0;
    const cli_opt opts[] = {
        {"chars", CLI_STRING, &chars, 0, 0, "digits|letters",
         "digits 0-9 (label = digit) or letters A-Z a-z (labels 0..51)", .def = ""},
        {"set", CLI_STRING, &set, 0, 0, "train|eval", "the fonts of this set in the list",
         .def = ""},
        {"out", CLI_STRING, &out, 0, 0, "DIR",
         "write DIR/CHARS-SET-{images-idx3,labels-idx1}-ubyte", .def = ""},
        {"fonts", CLI_STRING, &list, 0, 0, "FILE", "font list: SET STYLE PACKAGE FILE per line",
         .def = NULL},
        {"except", CLI_STRING, &except, 0, 0, "CHARS",
         "leave these characters out (their labels stay unused)", .def = "none"},
        {"max-fonts", CLI_INT, &max_fonts, 0, 100000, "N", "the set's first N fonts only (0 = all)",
         .def = NULL},
    };
    const int nopts = (int)(sizeof opts / sizeof opts[0]);
    char err[8800]; /* room for two paths and a message */
    const char **operands = calloc((size_t)argc, sizeof *operands);
    int noperands = 0;
    if (!operands) {
        fprintf(stderr, "mnist-glyphs: out of memory\n");
        return 1;
    }
    cli_action act = cli_parse(opts, nopts, argc, argv, operands, &noperands, err, sizeof err);
    free(operands);
    switch (act) {
    case CLI_HELP:
        cli_usage(stdout,
                  "usage: mnist-glyphs --chars digits|letters --set train|eval --out DIR\n"
                  "Renders characters from the fonts of a list (Debian font packages) into\n"
                  "MNIST IDX files, prepared as MNIST's digits were (fit 20x20, centre of mass).",
                  opts, nopts);
        return 0;
    case CLI_VERSION: printf("mnist-glyphs %s\n", VERSION); return 0;
    case CLI_ERROR: fprintf(stderr, "mnist-glyphs: %s\n", err); return 2;
    case CLI_RUN: break;
    }
    if (noperands) {
        fprintf(stderr, "mnist-glyphs: unexpected argument (see --help)\n");
        return 2;
    }
    if (!chars || (strcmp(chars, "digits") && strcmp(chars, "letters"))) {
        fprintf(stderr, "mnist-glyphs: --chars wants digits or letters\n");
        return 2;
    }
    if (!set || (strcmp(set, "train") && strcmp(set, "eval"))) {
        fprintf(stderr, "mnist-glyphs: --set wants train or eval\n");
        return 2;
    }
    if (!out) {
        fprintf(stderr, "mnist-glyphs: --out DIR is required\n");
        return 2;
    }
    const char *cs = strcmp(chars, "digits") ? LETTERS : DIGITS;
    int nch = (int)strlen(cs), nfonts = 0;
    /* The characters drawn, by their label (place in cs). */
    int drawn[64], ndrawn = 0;
    for (const char *e = except; *e; e++)
        if (!strchr(cs, *e)) {
            fprintf(stderr, "mnist-glyphs: --except: '%c' is not one of the %s\n", *e, chars);
            return 2;
        }
    for (int c = 0; c < nch; c++)
        if (!strchr(except, cs[c])) drawn[ndrawn++] = c;
    if (ndrawn == 0) {
        fprintf(stderr, "mnist-glyphs: --except leaves no character to draw\n");
        return 2;
    }
    glyph_font *fonts = NULL;
    if (fonts_load(list, set, max_fonts, &fonts, &nfonts, err, sizeof err)) {
        fprintf(stderr, "mnist-glyphs: %s\n", err);
        return 1;
    }
    /* Every font file is checked before anything is rendered, so a missing
     * package is named at once. */
    for (int i = 0; i < nfonts; i++) {
        FILE *f = fopen(fonts[i].path, "rb");
        if (!f) {
            fprintf(stderr, "mnist-glyphs: %s: %s (install the Debian package %s)\n", fonts[i].path,
                    strerror(errno), fonts[i].package);
            free(fonts);
            return 1;
        }
        fclose(f);
    }
    size_t n = (size_t)nfonts * NPX * NBOLD * ndrawn;
    uint8_t *images = malloc(n * 784), *labels = malloc(n);
    canvas cv = {NULL, 0};
    FT_Library ft = NULL;
    int rc = 1;
    if (!images || !labels) {
        fprintf(stderr, "mnist-glyphs: out of memory\n");
        goto done;
    }
    if (FT_Init_FreeType(&ft)) {
        fprintf(stderr, "mnist-glyphs: cannot initialise FreeType\n");
        ft = NULL;
        goto done;
    }
    size_t k = 0;
    for (int i = 0; i < nfonts; i++) {
        FT_Face face;
        if (FT_New_Face(ft, fonts[i].path, 0, &face)) {
            fprintf(stderr, "mnist-glyphs: %s: FreeType cannot read this font\n", fonts[i].path);
            goto done;
        }
        for (int p = 0; p < NPX; p++)
            for (int b = 0; b < NBOLD; b++)
                for (int d = 0; d < ndrawn; d++, k++) {
                    int c = drawn[d];
                    if (glyph_render(face, (unsigned char)cs[c], GLYPH_PX[p], GLYPH_BOLD[b], &cv,
                                     images + k * 784, err, sizeof err)) {
                        fprintf(stderr, "mnist-glyphs: %s: %s\n", fonts[i].path, err);
                        FT_Done_Face(face);
                        goto done;
                    }
                    labels[k] = (uint8_t)c;
                }
        FT_Done_Face(face);
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/%s-%s-images-idx3-ubyte", out, chars, set);
    if (nn_idx_write_images(path, images, (int)n, 28, 28, err, sizeof err)) {
        fprintf(stderr, "mnist-glyphs: %s\n", err);
        goto done;
    }
    char lpath[4096];
    snprintf(lpath, sizeof lpath, "%s/%s-%s-labels-idx1-ubyte", out, chars, set);
    if (nn_idx_write_labels(lpath, labels, (int)n, err, sizeof err)) {
        fprintf(stderr, "mnist-glyphs: %s\n", err);
        remove(path); /* no images without their labels */
        goto done;
    }
    printf("%s/%s-%s: %zu images (%d fonts x %d sizes x %d stroke widths x %d characters)\n", out,
           chars, set, n, nfonts, NPX, NBOLD, ndrawn);
    rc = 0;
done:
    if (ft) FT_Done_FreeType(ft);
    free(cv.px);
    free(images);
    free(labels);
    free(fonts);
    return rc;
}
