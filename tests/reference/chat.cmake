# Chat-prompt reference check: sd_chat_tokenize (via sd_ref_dump) against the model's Jinja
# template rendered by jinja2 and tokenized by HF `tokenizers`. Skips (77) when the real
# model file or jinja2 is absent.
add_test(NAME reference_chat
         COMMAND python3 ${CMAKE_CURRENT_SOURCE_DIR}/reference/chat_ref.py
                 --dump $<TARGET_FILE:sd_ref_dump>)
set_tests_properties(reference_chat PROPERTIES LABELS "cpu;reference" SKIP_RETURN_CODE 77
                     TIMEOUT 600)
