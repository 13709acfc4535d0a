/* wino_xf.h - the Winograd input and output transforms (internal to
 * nn/wino.c), written once over a vector type and included once per
 * vector width: before including, define
 *   WX_VT    the float vector type, WX_VI the int vector of the same size
 *   WX_VL    its lanes
 *   WX_FN(x) the name x gets in this instance
 *   WX_ATTR  function attributes (a target ISA, or nothing)
 *   WX_FMA(a, b, c)  a * b + c, fused where the ISA has it
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

/* One tile's input transform for channels [c, c + NC): ds is the first
 * of them at its top-left pixel, rows rs floats apart, pixels px apart;
 * v0 its V entry, the 16 element positions ps floats apart. NC is WX_VL
 * or the remainder; the loops unroll fully, so d and e stay in
 * registers. */
#define WX_IN(NC)                                                         \
    do {                                                                  \
        WX_VT d[4][4], e[4][4];                                           \
        _Pragma("GCC unroll 4") for (int r = 0; r < 4; r++)               \
            _Pragma("GCC unroll 4") for (int s = 0; s < 4; s++) d[r][s] = \
                WX_FN(ld)(ds + r * rs + s * px, NC);                      \
        _Pragma("GCC unroll 4") for (int s = 0; s < 4; s++)               \
        {                                                                 \
            e[0][s] = d[0][s] - d[2][s];                                  \
            e[1][s] = d[1][s] + d[2][s];                                  \
            e[2][s] = d[2][s] - d[1][s];                                  \
            e[3][s] = d[1][s] - d[3][s];                                  \
        }                                                                 \
        _Pragma("GCC unroll 4") for (int r = 0; r < 4; r++)               \
        {                                                                 \
            float *vr = v0 + (size_t)r * 4 * ps + c;                      \
            WX_FN(st)(vr, e[r][0] - e[r][2], NC);                         \
            WX_FN(st)(vr + ps, e[r][1] + e[r][2], NC);                    \
            WX_FN(st)(vr + 2 * ps, e[r][2] - e[r][1], NC);                \
            WX_FN(st)(vr + 3 * ps, e[r][1] - e[r][3], NC);                \
        }                                                                 \
    } while (0)

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

/* ---- F(4x4,3x3) ----------------------------------------------------------
 * B^T = [4  0 -5  0 1 0;     A^T = [1 1  1 1  1 0;
 *        0 -4 -4  1 1 0;            0 1 -1 2 -2 0;
 *        0  4 -4 -1 1 0;            0 1  1 4  4 0;
 *        0 -2 -1  2 1 0;            0 1 -1 8 -8 1]
 *        0  2 -1 -2 1 0;
 *        0  4  0 -5 0 1]
 * applied to one side of a 6x6 block by WX_BT6 and of a 6x4 one by WX_AT6,
 * in the grouping that shares the sums (Lavin and Gray's). */
#define WX_BT6(o, i)                                                   \
    do {                                                               \
        WX_VT s12 = i(1) + i(2), d12 = i(1) - i(2);                    \
        WX_VT s34 = i(3) + i(4), d42 = i(4) - i(2), d31 = i(3) - i(1); \
        o(0) = WX_FMA(four, i(0), WX_FMA(mfive, i(2), i(4)));          \
        o(1) = WX_FMA(mfour, s12, s34);                                \
        o(2) = WX_FMA(four, d12, i(4) - i(3));                         \
        o(3) = WX_FMA(two, d31, d42);                                  \
        o(4) = WX_FMA(mtwo, d31, d42);                                 \
        o(5) = WX_FMA(four, i(1), WX_FMA(mfive, i(3), i(5)));          \
    } while (0)

#define WX_AT6(o, i)                                \
    do {                                            \
        WX_VT s12 = i(1) + i(2), d12 = i(1) - i(2); \
        WX_VT s34 = i(3) + i(4), d34 = i(3) - i(4); \
        o(0) = i(0) + s12 + s34;                    \
        o(1) = WX_FMA(two, d34, d12);               \
        o(2) = WX_FMA(four, s34, s12);              \
        o(3) = WX_FMA(eight, d34, d12) + i(5);      \
    } while (0)

/* One tile's F(4x4,3x3) input transform for channels [c, c + NC): the
 * rows of d (6x6 from ds, as WX_IN's) through B^T into e, then e's
 * columns into the 36 V positions (ps floats apart). */
#define WX_IN4(NC)                                                                                 \
    do {                                                                                           \
        WX_VT e[6][6];                                                                             \
        _Pragma("GCC unroll 6") for (int r = 0; r < 6; r++)                                        \
        {                                                                                          \
            const float *dr = ds + r * rs;                                                         \
            WX_VT d[6];                                                                            \
            _Pragma("GCC unroll 6") for (int s = 0; s < 6; s++) d[s] = WX_FN(ld)(dr + s * px, NC); \
            WX_BT6(WX_EO, WX_DI);                                                                  \
        }                                                                                          \
        _Pragma("GCC unroll 6") for (int s = 0; s < 6; s++)                                        \
        {                                                                                          \
            WX_VT v[6];                                                                            \
            WX_BT6(WX_VO, WX_EI);                                                                  \
            _Pragma("GCC unroll 6") for (int r = 0; r < 6; r++)                                    \
                WX_FN(st)(v0 + (size_t)(r * 6 + s) * ps + c, v[r], NC);                            \
        }                                                                                          \
    } while (0)
#define WX_DI(k) d[k]
#define WX_EO(k) e[k][r]
#define WX_EI(k) e[s][k]
#define WX_VO(k) v[k]

/* One tile's F(4x4,3x3) output transform for channels [o, o + NO): the
 * 36 M entries (O floats apart) through A^T by rows into q [4, 6], then
 * q's rows into 4 outputs each, plus the bias, then the ReLU. */
#define WX_OUT4(NO)                                                    \
    do {                                                               \
        WX_VT q[4][6], bv = b ? WX_FN(ld)(b + o, NO) : zero;           \
        _Pragma("GCC unroll 6") for (int s = 0; s < 6; s++)            \
        {                                                              \
            WX_VT m[6];                                                \
            _Pragma("GCC unroll 6") for (int r = 0; r < 6; r++) m[r] = \
                WX_FN(ld)(m0 + (size_t)(r * 6 + s) * O + o, NO);       \
            WX_AT6(WX_QO, WX_MI);                                      \
        }                                                              \
        _Pragma("GCC unroll 4") for (int a = 0; a < 4; a++)            \
        {                                                              \
            WX_VT yv[4];                                               \
            WX_AT6(WX_YO, WX_QI);                                      \
            _Pragma("GCC unroll 4") for (int j = 0; j < 4; j++)        \
            {                                                          \
                WX_VT y_ = yv[j] + bv;                                 \
                if (relu) y_ = (WX_VT)((WX_VI)y_ & (y_ > zero));       \
                WX_FN(st)(y0 + ((size_t)a * GW + j) * O + o, y_, NO);  \
            }                                                          \
        }                                                              \
    } while (0)
#define WX_MI(k) m[k]
#define WX_QO(k) q[k][s]
#define WX_QI(k) q[a][k]
#define WX_YO(k) yv[k]

/* The two transforms below are compiled once for each channel count in
 * WX_CONSTS and once for any other: with C (or O) a constant, the
 * compiler addresses a tile's 16 or 36 positions from one pointer and
 * drops the tail code, where with a variable count it kept a pointer per
 * position and spilled them (the default CNN's batch-1 forward 0.978 of
 * its time on AVX-512, 0.979 on AVX2, 14 and 8 interleaved pairs; a CNN
 * training step 0.98). The bodies are always inlined into those copies. */
#define WX_INLINE WX_ATTR static inline __attribute__((always_inline))

/* Channels [c0, c0 + NC) of a tile by TILE (WX_IN4 for F(4x4), WX_IN
 * for F(2x2)) a vector at a time, d0 the tile's top-left pixel, channel
 * c at d0 + coff + c - c0. */
#define WX_IN_RUN(TILE, c0, NC, coff)                   \
    do {                                                \
        int c = (c0);                                   \
        const int cend = (c0) + (NC);                   \
        for (; c + WX_VL <= cend; c += WX_VL) {         \
            const float *ds = d0 + (coff) + (c - (c0)); \
            TILE(WX_VL);                                \
        }                                               \
        if (c < cend) {                                 \
            const float *ds = d0 + (coff) + (c - (c0)); \
            TILE(cend - c);                             \
        }                                               \
    } while (0)
#define WX_IN_S2D(TILE)                                                                     \
    do {                                                                                    \
        for (int ph = 0; ph < 4; ph++) {                                                    \
            const int cph = ph * cq;                                                        \
            WX_IN_RUN(TILE, cph, cq, (size_t)(ph >> 1) * (rs / 2) + (size_t)(ph & 1) * cq); \
        }                                                                                   \
    } while (0)

/* V [T, P, C]: for each tile, B^T d B per channel, with the F(2x2,3x3)
 * B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1] or F(4x4,3x3)'s above,
 * by the tile gm->m. planar != 0: V [P][T, C] instead, one matrix of the
 * n images' tiles per position, planar floats apart (the weight
 * gradient's products read them in place).
 * s2d: xp is not z [n, Hp, Wp, C] but the bordered image it is made of,
 * [n, 2 Hp, 2 Wp, C / 4] (wino_s2d): z's pixel (r, s) channel
 * (2a + b) C / 4 + c is that image's pixel (2r + a, 2s + b) channel c.
 * Rows of z are then rs floats apart as before, pixels C / 2, and each
 * phase's channels start at its own offset: the transform reads them
 * where they lie instead of after a copy into z: the default CNN's
 * 12x12 layer at batch 1 31.0-31.8 -> 29.4-30.4 us (four interleaved
 * pairs, per-layer timing on an idle machine); the whole batch-1 pass
 * stays within its noise of about 1 us, on AVX-512 and capped to AVX2
 * (five pairs each). */
WX_INLINE void WX_FN(input_transform_c)(float *V, const float *xp, const int C, int n,
                                        const struct wino_geom *gm, size_t planar, int s2d)
{
    const int TH = gm->TH, TW = gm->TW, mt = gm->m, P = gm->P;
    const size_t rs = (size_t)gm->Wp * C, ps = planar ? planar : (size_t)C;
    const WX_VT zero = {0}, two = zero + 2.0f, four = zero + 4.0f, mtwo = zero - 2.0f,
                mfour = zero - 4.0f, mfive = zero - 5.0f;
    size_t t = 0;
    for (int i = 0; i < n; i++)
        for (int ti = 0; ti < TH; ti++)
            for (int tj = 0; tj < TW; tj++, t++) {
                float *v0 = V + (planar ? t : t * P) * C;
                if (!s2d) {
                    const int px = C;
                    const float *d0 =
                        xp + ((size_t)i * gm->Hp + mt * ti) * rs + (size_t)mt * tj * px;
                    if (mt == 4)
                        WX_IN_RUN(WX_IN4, 0, C, 0);
                    else
                        WX_IN_RUN(WX_IN, 0, C, 0);
                    continue;
                }
                const int px = C / 2, cq = C / 4;
                const float *d0 = xp + ((size_t)i * gm->Hp + mt * ti) * rs + (size_t)mt * tj * px;
                if (mt == 4)
                    WX_IN_S2D(WX_IN4);
                else
                    WX_IN_S2D(WX_IN);
            }
}

/* Yt [n, m TH, m TW, O] = A^T M A + bias (then ReLU), with the F(2x2,3x3)
 * A^T = [1 1 1 0; 0 1 -1 -1] or F(4x4,3x3)'s above. */
WX_INLINE void WX_FN(output_transform_c)(float *Yt, const float *M, const float *b, int relu,
                                         const int O, int n, const struct wino_geom *gm)
{
    const int TH = gm->TH, TW = gm->TW, mt = gm->m, P = gm->P, GW = mt * TW;
    const WX_VT zero = {0}, two = zero + 2.0f, four = zero + 4.0f, eight = zero + 8.0f;
    size_t t = 0;
    for (int i = 0; i < n; i++)
        for (int ti = 0; ti < TH; ti++)
            for (int tj = 0; tj < TW; tj++, t++) {
                const float *m0 = M + t * P * O;
                float *y0 = Yt + (((size_t)i * mt * TH + mt * ti) * GW + mt * tj) * O;
                int o = 0;
                if (mt == 4) {
                    for (; o + WX_VL <= O; o += WX_VL) WX_OUT4(WX_VL);
                    if (o < O) WX_OUT4(O - o);
                } else {
                    for (; o + WX_VL <= O; o += WX_VL) WX_OUT(WX_VL);
                    if (o < O) WX_OUT(O - o);
                }
            }
}

/* The copies: WX_CONSTS(X) lists X(32) X(64) ... (wino.c: the channel
 * counts of the shipped nets' Winograd layers, their space-to-depth
 * inputs and input gradients). */
#define WX_IN_COPY(N)                                                                         \
    WX_ATTR static void WX_FN(input_transform_##N)(                                           \
        float *V, const float *xp, int n, const struct wino_geom *gm, size_t planar, int s2d) \
    {                                                                                         \
        WX_FN(input_transform_c)(V, xp, N, n, gm, planar, s2d);                               \
    }
#define WX_OUT_COPY(N)                                                                           \
    WX_ATTR static void WX_FN(output_transform_##N)(float *Yt, const float *M, const float *b,   \
                                                    int relu, int n, const struct wino_geom *gm) \
    {                                                                                            \
        WX_FN(output_transform_c)(Yt, M, b, relu, N, n, gm);                                     \
    }
WX_CONSTS(WX_IN_COPY)
WX_CONSTS(WX_OUT_COPY)
#define WX_IN_CASE(N)                                          \
    case N:                                                    \
        WX_FN(input_transform_##N)(V, xp, n, gm, planar, s2d); \
        return;
#define WX_OUT_CASE(N) \
    case N: WX_FN(output_transform_##N)(Yt, M, b, relu, n, gm); return;

WX_ATTR static void WX_FN(input_transform)(float *V, const float *xp, const nn_conv_shape *cs,
                                           int n, const struct wino_geom *gm, size_t planar,
                                           int s2d)
{
    switch (cs->C) {
        WX_CONSTS(WX_IN_CASE)
    default: WX_FN(input_transform_c)(V, xp, cs->C, n, gm, planar, s2d);
    }
}

/* Yt [n, m TH, m TW, O] (output_transform_c), the copy for cs->O. */
WX_ATTR static void WX_FN(output_transform)(float *Yt, const float *M, const float *b, int relu,
                                            const nn_conv_shape *cs, int n,
                                            const struct wino_geom *gm)
{
    switch (cs->O) {
        WX_CONSTS(WX_OUT_CASE)
    default: WX_FN(output_transform_c)(Yt, M, b, relu, cs->O, n, gm);
    }
}

#undef WX_INLINE
#undef WX_IN_COPY
#undef WX_OUT_COPY
#undef WX_IN_CASE
#undef WX_IN_RUN
#undef WX_IN_S2D
#undef WX_OUT_CASE
#undef WX_IN
#undef WX_OUT
#undef WX_BT6
#undef WX_AT6
#undef WX_IN4
#undef WX_OUT4
#undef WX_DI
#undef WX_EO
#undef WX_EI
#undef WX_VO
#undef WX_MI
#undef WX_QO
#undef WX_QI
#undef WX_YO
