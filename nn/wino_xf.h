/* wino_xf.h - the Winograd input and output transforms (internal to
 * nn/wino.c), written once over a vector type and included once per
 * vector width: before including, define
 *   WX_VT    the float vector type, WX_VI the int vector of the same size
 *   WX_VL    its lanes
 *   WX_FN(x) the name x gets in this instance
 *   WX_ATTR  function attributes (a target ISA, or nothing)
 * The transforms run over channels, WX_VL at a time: element-wise vector
 * arithmetic with no shuffles (see wino.c's data flow). */

/* n floats at p into a vector, zeros after them (n <= WX_VL); and back.
 * The constant-size copy of a whole vector is one load or store. */
WX_ATTR static inline WX_VT WX_FN(ld)(const float *p, int n)
{
    WX_VT v = {0};
    if (n == WX_VL)
        memcpy(&v, p, sizeof v);
    else
        for (int i = 0; i < n; i++) v[i] = p[i];
    return v;
}
WX_ATTR static inline void WX_FN(st)(float *p, WX_VT v, int n)
{
    if (n == WX_VL)
        memcpy(p, &v, sizeof v);
    else
        for (int i = 0; i < n; i++) p[i] = v[i];
}

/* One tile's input transform for channels [c, c + NC): d0 is its top-left
 * pixel, rows rs floats apart, pixels C apart; v0 its V entry, the 16
 * element positions C floats apart. NC is WX_VL or the remainder; the
 * loops unroll fully, so d and e stay in registers. */
#define WX_IN(NC)                                                         \
    do {                                                                  \
        WX_VT d[4][4], e[4][4];                                           \
        _Pragma("GCC unroll 4") for (int r = 0; r < 4; r++)               \
            _Pragma("GCC unroll 4") for (int s = 0; s < 4; s++) d[r][s] = \
                WX_FN(ld)(d0 + r * rs + s * C + c, NC);                   \
        _Pragma("GCC unroll 4") for (int s = 0; s < 4; s++)               \
        {                                                                 \
            e[0][s] = d[0][s] - d[2][s];                                  \
            e[1][s] = d[1][s] + d[2][s];                                  \
            e[2][s] = d[2][s] - d[1][s];                                  \
            e[3][s] = d[1][s] - d[3][s];                                  \
        }                                                                 \
        _Pragma("GCC unroll 4") for (int r = 0; r < 4; r++)               \
        {                                                                 \
            float *vr = v0 + (size_t)r * 4 * C + c;                       \
            WX_FN(st)(vr, e[r][0] - e[r][2], NC);                         \
            WX_FN(st)(vr + C, e[r][1] + e[r][2], NC);                     \
            WX_FN(st)(vr + 2 * C, e[r][2] - e[r][1], NC);                 \
            WX_FN(st)(vr + 3 * C, e[r][1] - e[r][3], NC);                 \
        }                                                                 \
    } while (0)

/* V [T, 16, C]: for each tile, B^T d B per channel, with
 * B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]. */
WX_ATTR static void WX_FN(input_transform)(float *V, const float *xp, const nn_conv_shape *cs,
                                           int n, const struct wino_geom *gm)
{
    const int C = cs->C, TH = gm->TH, TW = gm->TW;
    const size_t rs = (size_t)gm->Wp * C;
    size_t t = 0;
    for (int i = 0; i < n; i++)
        for (int ti = 0; ti < TH; ti++)
            for (int tj = 0; tj < TW; tj++, t++) {
                const float *d0 = xp + ((size_t)i * gm->Hp + 2 * ti) * rs + (size_t)2 * tj * C;
                float *v0 = V + t * 16 * C;
                int c = 0;
                for (; c + WX_VL <= C; c += WX_VL) WX_IN(WX_VL);
                if (c < C) WX_IN(C - c);
            }
}

/* One tile's output transform for channels [o, o + NO): m0 its M entry
 * (16 positions O floats apart), y0 its top-left output in Yt. */
#define WX_OUT(NO)                                                        \
    do {                                                                  \
        WX_VT m[4][4], q[2][4], bv = b ? WX_FN(ld)(b + o, NO) : zero;     \
        _Pragma("GCC unroll 4") for (int r = 0; r < 4; r++)               \
            _Pragma("GCC unroll 4") for (int s = 0; s < 4; s++) m[r][s] = \
                WX_FN(ld)(m0 + (r * 4 + s) * O + o, NO);                  \
        _Pragma("GCC unroll 4") for (int s = 0; s < 4; s++)               \
        {                                                                 \
            q[0][s] = m[0][s] + m[1][s] + m[2][s];                        \
            q[1][s] = m[1][s] - m[2][s] - m[3][s];                        \
        }                                                                 \
        _Pragma("GCC unroll 2") for (int a = 0; a < 2; a++)               \
        {                                                                 \
            WX_VT y_0 = q[a][0] + q[a][1] + q[a][2] + bv;                 \
            WX_VT y_1 = q[a][1] - q[a][2] - q[a][3] + bv;                 \
            if (relu) {                                                   \
                y_0 = (WX_VT)((WX_VI)y_0 & (y_0 > zero));                 \
                y_1 = (WX_VT)((WX_VI)y_1 & (y_1 > zero));                 \
            }                                                             \
            WX_FN(st)(y0 + (size_t)a * GW * O + o, y_0, NO);              \
            WX_FN(st)(y0 + ((size_t)a * GW + 1) * O + o, y_1, NO);        \
        }                                                                 \
    } while (0)

/* Yt [n, 2 TH, 2 TW, O] = A^T M A + bias (then ReLU), with
 * A^T = [1 1 1 0; 0 1 -1 -1]. */
WX_ATTR static void WX_FN(output_transform)(float *Yt, const float *M, const float *b, int relu,
                                            const nn_conv_shape *cs, int n,
                                            const struct wino_geom *gm)
{
    const int O = cs->O, TH = gm->TH, TW = gm->TW, GW = 2 * TW;
    const WX_VT zero = {0};
    size_t t = 0;
    for (int i = 0; i < n; i++)
        for (int ti = 0; ti < TH; ti++)
            for (int tj = 0; tj < TW; tj++, t++) {
                const float *m0 = M + t * 16 * O;
                float *y0 = Yt + (((size_t)i * 2 * TH + 2 * ti) * GW + 2 * tj) * O;
                int o = 0;
                for (; o + WX_VL <= O; o += WX_VL) WX_OUT(WX_VL);
                if (o < O) WX_OUT(O - o);
            }
}

#undef WX_IN
#undef WX_OUT
