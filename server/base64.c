/* base64.c - see base64.h. */
#include "server/base64.h"

static const char enc_table[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* 0..63 for alphabet characters, 64 for everything else. */
static uint8_t dec_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') return (uint8_t)(c - 'A');
    if (c >= 'a' && c <= 'z') return (uint8_t)(c - 'a' + 26);
    if (c >= '0' && c <= '9') return (uint8_t)(c - '0' + 52);
    if (c == '+') return 62;
    if (c == '/') return 63;
    return 64;
}

size_t srv_b64_decoded_max(size_t len) { return len / 4 * 3 + 3; }

size_t srv_b64_encoded_len(size_t len)
{
    size_t groups = len / 3 + (len % 3 != 0);
    if (groups > ((size_t)-1) / 4) return 0;
    return groups * 4;
}

int srv_b64_decode(const char *in, size_t len, uint8_t *out, size_t *outlen)
{
    /* Padding: up to two '=' at the very end, and then the whole text
     * must be a multiple of 4 characters. */
    size_t pad = 0;
    while (pad < 2 && len > pad && in[len - 1 - pad] == '=') pad++;
    if (pad && len % 4 != 0) return -1;
    size_t n = len - pad; /* alphabet characters */
    if (n % 4 == 1)       /* 6 bits cannot make a byte */
        return -1;
    size_t o = 0, i = 0;
    for (; i + 4 <= n; i += 4) {
        uint8_t a = dec_value((unsigned char)in[i]), b = dec_value((unsigned char)in[i + 1]),
                c = dec_value((unsigned char)in[i + 2]), d = dec_value((unsigned char)in[i + 3]);
        if ((a | b | c | d) & 64) return -1;
        uint32_t v = (uint32_t)a << 18 | (uint32_t)b << 12 | (uint32_t)c << 6 | d;
        out[o++] = (uint8_t)(v >> 16);
        out[o++] = (uint8_t)(v >> 8);
        out[o++] = (uint8_t)v;
    }
    size_t rest = n - i; /* 0, 2 or 3 */
    if (rest) {
        uint8_t a = dec_value((unsigned char)in[i]), b = dec_value((unsigned char)in[i + 1]),
                c = rest == 3 ? dec_value((unsigned char)in[i + 2]) : 0;
        if ((a | b | c) & 64) return -1;
        uint32_t v = (uint32_t)a << 18 | (uint32_t)b << 12 | (uint32_t)c << 6;
        /* Bits below the last whole byte must be zero (canonical form). */
        if (rest == 2 ? (v & 0xffffu) : (v & 0xffu)) return -1;
        out[o++] = (uint8_t)(v >> 16);
        if (rest == 3) out[o++] = (uint8_t)(v >> 8);
    }
    *outlen = o;
    return 0;
}

size_t srv_b64_encode(const uint8_t *in, size_t len, char *out)
{
    size_t o = 0, i = 0;
    for (; i + 3 <= len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = enc_table[v >> 18];
        out[o++] = enc_table[(v >> 12) & 63];
        out[o++] = enc_table[(v >> 6) & 63];
        out[o++] = enc_table[v & 63];
    }
    if (i < len) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < len) v |= (uint32_t)in[i + 1] << 8;
        out[o++] = enc_table[v >> 18];
        out[o++] = enc_table[(v >> 12) & 63];
        out[o++] = i + 1 < len ? enc_table[(v >> 6) & 63] : '=';
        out[o++] = '=';
    }
    return o;
}
