/* Hash maps built at load: token text -> id and merge pair -> (rank, merged id). */
#include <stdlib.h>
#include <string.h>

#include "core/check.h"
#include "core/hash.h"
#include "tokenizer/tokenizer_impl.h"

static uint32_t hash_bytes(const char *s, size_t n) { return sd_fnv1a32(SD_FNV32_INIT, s, n); }

/* Smallest power of two >= 2 * n (at least 16). */
static size_t table_size(size_t n)
{
    size_t cap = 16;
    while (cap < 2 * n) cap <<= 1;
    return cap;
}

sd_status_t sd_text_map_init(sd_text_map_t *m, size_t n)
{
    size_t cap = table_size(n);
    m->hash = malloc(cap * sizeof *m->hash);
    m->id = malloc(cap * sizeof *m->id);
    if (m->hash == NULL || m->id == NULL) {
        sd_text_map_free(m);
        return sd_set_error(SD_ERR_OUT_OF_MEMORY, "out of memory for a %zu-slot vocabulary map",
                            cap);
    }
    memset(m->id, 0xFF, cap * sizeof *m->id);
    m->mask = cap - 1;
    return SD_OK;
}

void sd_text_map_free(sd_text_map_t *m)
{
    free(m->hash);
    free(m->id);
    m->hash = NULL;
    m->id = NULL;
}

static int text_is(const sd_tokenizer_t *t, int32_t id, const char *s, size_t n)
{
    return t->len[id] == n && memcmp(t->blob + t->off[id], s, n) == 0;
}

void sd_text_map_put(sd_text_map_t *m, const sd_tokenizer_t *t, int32_t id)
{
    const char *s = t->blob + t->off[id];
    size_t n = t->len[id];
    uint32_t h = hash_bytes(s, n);
    size_t i = h & m->mask;
    while (m->id[i] >= 0 && !(m->hash[i] == h && text_is(t, m->id[i], s, n))) i = (i + 1) & m->mask;
    m->hash[i] = h;
    m->id[i] = id;
}

int32_t sd_text_map_get(const sd_text_map_t *m, const sd_tokenizer_t *t, const char *s, size_t n)
{
    uint32_t h = hash_bytes(s, n);
    for (size_t i = h & m->mask; m->id[i] >= 0; i = (i + 1) & m->mask)
        if (m->hash[i] == h && text_is(t, m->id[i], s, n)) return m->id[i];
    return -1;
}

sd_status_t sd_pair_map_init(sd_pair_map_t *m, size_t n)
{
    size_t cap = table_size(n);
    m->slots = malloc(cap * sizeof *m->slots);
    SD_ALLOC_CHECK(m->slots, cap * sizeof *m->slots, "the merge map");
    for (size_t i = 0; i < cap; i++) m->slots[i].key = UINT64_MAX;
    m->mask = cap - 1;
    return SD_OK;
}

void sd_pair_map_free(sd_pair_map_t *m)
{
    free(m->slots);
    m->slots = NULL;
}

static size_t pair_home(const sd_pair_map_t *m, uint64_t key)
{
    return (size_t)((key * 0x9E3779B97F4A7C15ull) >> 32) & m->mask;
}

void sd_pair_map_put(sd_pair_map_t *m, int32_t a, int32_t b, int32_t rank, int32_t id)
{
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    size_t i = pair_home(m, key);
    while (m->slots[i].key != UINT64_MAX && m->slots[i].key != key) i = (i + 1) & m->mask;
    if (m->slots[i].key == key) return;
    m->slots[i] = (sd_pair_slot_t){.key = key, .rank = rank, .id = id};
}

const sd_pair_slot_t *sd_pair_map_get(const sd_pair_map_t *m, int32_t a, int32_t b)
{
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    for (size_t i = pair_home(m, key); m->slots[i].key != UINT64_MAX; i = (i + 1) & m->mask)
        if (m->slots[i].key == key) return &m->slots[i];
    return NULL;
}
