# sd_ref_dump: the C side of the Python reference checks (tokenizer.cmake, forward.cmake).
add_executable(sd_ref_dump ${CMAKE_CURRENT_SOURCE_DIR}/reference/sd_ref_dump.c)
target_link_libraries(sd_ref_dump PRIVATE specdec)
# C dequantizers vs gguf-py's, bit for bit, every quantized type (tests/reference/check_codecs.py).
add_test(NAME reference_codecs
         COMMAND python3 ${CMAKE_CURRENT_SOURCE_DIR}/reference/check_codecs.py
                 --dump $<TARGET_FILE:sd_ref_dump>)
set_tests_properties(reference_codecs PROPERTIES LABELS "cpu;reference" TIMEOUT 300)
