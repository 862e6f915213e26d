# Tokenizer reference check: C ids (via sd_ref_dump) against HF `tokenizers` built from the
# same GGUF metadata. Skips (77) when the real model file is absent.
add_test(NAME reference_tokenizer
         COMMAND python3 ${CMAKE_CURRENT_SOURCE_DIR}/reference/tokenizer_ref.py
                 --dump $<TARGET_FILE:sd_ref_dump>)
set_tests_properties(reference_tokenizer PROPERTIES LABELS "cpu;reference" SKIP_RETURN_CODE 77
                     TIMEOUT 600)
