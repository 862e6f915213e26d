# C forward logits vs the independent NumPy reference (tests/reference/check_logits.py):
# the real SmolLM2 file when present, plus synthetic llama/qwen2 models of every weight type.
add_test(NAME reference_forward
         COMMAND python3 ${CMAKE_CURRENT_SOURCE_DIR}/reference/check_logits.py
                 --dump $<TARGET_FILE:sd_ref_dump>
                 --synthetic ${CMAKE_CURRENT_BINARY_DIR}/tmp)
set_tests_properties(reference_forward PROPERTIES LABELS "cpu;reference"
                     SKIP_RETURN_CODE 77 TIMEOUT 900)
