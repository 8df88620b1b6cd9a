/* Reference logits from llama.cpp itself, for goldens where llama-cpp-python is not installed:
 * the same library calls `Llama(logits_all=True).eval(ids)` makes (one batch per sequence, an
 * output at every position, a fresh KV cache per sequence).
 *
 *   gcc -O2 -I$LLAMACPP/include llama_logits.c -L$LLAMACPP/build/bin -lllama -Wl,-rpath,$LLAMACPP/build/bin
 *   ./a.out MODEL.gguf OUT.bin < ids.txt      (one sequence per line, space-separated token ids)
 *
 * OUT.bin: for each sequence, T × n_vocab little-endian f32 logits, row-major. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "llama.h"

static void quiet(enum ggml_log_level level, const char *text, void *data) { (void)level; (void)text; (void)data; }

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: %s MODEL.gguf OUT.bin < ids.txt\n", argv[0]); return 2; }
    llama_log_set(quiet, NULL);
    llama_backend_init();
    struct llama_model_params mp = llama_model_default_params();
    struct llama_model *model = llama_model_load_from_file(argv[1], mp);
    if (!model) { fprintf(stderr, "cannot load %s\n", argv[1]); return 1; }
    int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = 256; cp.n_batch = 256; cp.n_ubatch = 256; cp.n_threads = 2; cp.n_threads_batch = 2;
    struct llama_context *ctx = llama_init_from_model(model, cp);
    if (!ctx) { fprintf(stderr, "cannot create a context\n"); return 1; }
    FILE *out = fopen(argv[2], "wb");
    if (!out) { perror(argv[2]); return 1; }
    static char line[1 << 16];
    while (fgets(line, sizeof line, stdin)) {
        llama_token ids[256]; int n = 0;
        for (char *tok = strtok(line, " \n"); tok && n < 256; tok = strtok(NULL, " \n")) ids[n++] = atoi(tok);
        if (n == 0) continue;
        llama_memory_clear(llama_get_memory(ctx), true);
        struct llama_batch b = llama_batch_init(n, 0, 1);
        for (int i = 0; i < n; i++) {
            b.token[i] = ids[i]; b.pos[i] = i; b.n_seq_id[i] = 1; b.seq_id[i][0] = 0; b.logits[i] = 1;
        }
        b.n_tokens = n;
        if (llama_decode(ctx, b) != 0) { fprintf(stderr, "llama_decode failed\n"); return 1; }
        for (int i = 0; i < n; i++) fwrite(llama_get_logits_ith(ctx, i), sizeof(float), n_vocab, out);
        llama_batch_free(b);
    }
    fclose(out);
    llama_free(ctx);
    llama_model_free(model);
    return 0;
}
