# sd_ref_dump: the C side of the Python reference checks (tokenizer.cmake, forward.cmake).
add_executable(sd_ref_dump ${CMAKE_CURRENT_SOURCE_DIR}/reference/sd_ref_dump.c)
target_link_libraries(sd_ref_dump PRIVATE specdec)
