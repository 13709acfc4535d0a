/* rng.h - seeded random numbers, so a training run is reproducible.
 *
 * nn_rng is xoshiro256** seeded through splitmix64. nn_hash64 is a
 * stateless counter-based generator: the same (seed, counter) gives the same
 * value on any thread, which keeps dropout masks and augmentation identical
 * whatever the thread count.
 */
#ifndef NN_RNG_H
#define NN_RNG_H

#include <stdint.h>

typedef struct {
    uint64_t s[4];
} nn_rng;

void nn_rng_seed(nn_rng *r, uint64_t seed);
uint64_t nn_rng_u64(nn_rng *r);
/* Uniform in [0, 1). */
float nn_rng_uniform(nn_rng *r);
/* Uniform integer in [0, n), n > 0. */
uint32_t nn_rng_below(nn_rng *r, uint32_t n);

/* splitmix64's increment and finaliser (the seeding and the hash share
 * them; dropout's vector copy of the hash in layers.c uses the same
 * constants). */
#define NN_SPLITMIX_GAMMA 0x9e3779b97f4a7c15ULL
#define NN_SPLITMIX_M1 0xbf58476d1ce4e5b9ULL
#define NN_SPLITMIX_M2 0x94d049bb133111ebULL
/* nn_hash64's odd multiplier of the counter. */
#define NN_HASH_MUL 0xd1342543de82ef95ULL
static inline uint64_t nn_splitmix_mix(uint64_t z)
{
    z = (z ^ (z >> 30)) * NN_SPLITMIX_M1;
    z = (z ^ (z >> 27)) * NN_SPLITMIX_M2;
    return z ^ (z >> 31);
}

/* Stateless: a well-mixed 64-bit value of (seed, counter): splitmix64's
 * finaliser of seed ^ counter * odd constant, stepped twice. Inline, so a
 * loop over counters (dropout's masks) keeps it in registers instead of
 * calling out per element. */
static inline uint64_t nn_hash64(uint64_t seed, uint64_t counter)
{
    return nn_splitmix_mix((seed ^ (counter * NN_HASH_MUL)) + 2 * NN_SPLITMIX_GAMMA);
}
/* Uniform in [0, 1) from nn_hash64's top 24 bits. */
static inline float nn_hash_uniform(uint64_t seed, uint64_t counter)
{
    return (float)(uint32_t)(nn_hash64(seed, counter) >> 40) * (1.0f / 16777216.0f);
}

#endif
