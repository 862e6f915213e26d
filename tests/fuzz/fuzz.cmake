# Fuzz harnesses: tests/fuzz/fuzz_<target>.c, seed corpora in tests/fuzz/<target>/ (small,
# checked in), optional dictionaries tests/fuzz/<target>.dict. docs/reliability.md, "Fuzzing".
#
# - Every build links each harness with replay_main.c (any compiler) and adds the test
#   fuzz_replay_<target> (label cpu): the checked-in corpus, every input once. The release
#   and ASan passes of scripts/test.sh both run them.
# - A build configured with -DSPECDEC_SANITIZE=fuzzer (clang; scripts/fuzz.sh) links libFuzzer
#   instead and adds fuzz_run_<target> (label fuzz): SPECDEC_FUZZ_SECONDS of coverage-guided
#   fuzzing from a copy of the corpus (new inputs and crashes land in build/tests/fuzz-work/).
set(SPECDEC_FUZZ_SECONDS 60 CACHE STRING "seconds each fuzz_run_<target> test fuzzes")
set(fuzz_src ${CMAKE_CURRENT_SOURCE_DIR}/fuzz)
set(fuzz_work ${CMAKE_CURRENT_BINARY_DIR}/fuzz-work)

# specdec_fuzz(target LIBS libs... [SOURCES extra.c...] [NEEDS_MODEL])
function(specdec_fuzz target)
  cmake_parse_arguments(F "NEEDS_MODEL" "" "LIBS;SOURCES" ${ARGN})
  set(exe fuzz_${target})
  add_executable(${exe} ${fuzz_src}/fuzz_${target}.c ${F_SOURCES})
  target_link_libraries(${exe} PRIVATE ${F_LIBS})
  target_include_directories(${exe} PRIVATE ${CMAKE_CURRENT_SOURCE_DIR} ${PROJECT_SOURCE_DIR})
  target_compile_definitions(${exe} PRIVATE SPECDEC_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
  if(SPECDEC_SANITIZE STREQUAL "fuzzer")
    target_link_options(${exe} PRIVATE -fsanitize=fuzzer)
    add_test(NAME fuzz_run_${target}
             COMMAND bash ${fuzz_src}/run_fuzzer.sh $<TARGET_FILE:${exe}> ${fuzz_src}/${target}
                     ${SPECDEC_FUZZ_SECONDS} ${fuzz_work}/${target})
    math(EXPR limit "${SPECDEC_FUZZ_SECONDS} + 120")
    set_tests_properties(fuzz_run_${target} PROPERTIES LABELS fuzz TIMEOUT ${limit}
                         SKIP_RETURN_CODE 77)
    # libFuzzer replays with -runs=0: every corpus input once, nothing written
    add_test(NAME fuzz_replay_${target} COMMAND ${exe} -runs=0 -error_exitcode=1 ${fuzz_src}/${target})
  else()
    target_sources(${exe} PRIVATE ${fuzz_src}/replay_main.c)
    add_test(NAME fuzz_replay_${target} COMMAND ${exe} ${fuzz_src}/${target})
  endif()
  set_tests_properties(fuzz_replay_${target} PROPERTIES LABELS cpu TIMEOUT 300
                       SKIP_RETURN_CODE 77)
endfunction()

specdec_fuzz(fault LIBS sd_core)
specdec_fuzz(gguf LIBS specdec)
specdec_fuzz(tokenizer LIBS specdec SOURCES ${fuzz_src}/fuzz_model.c)
specdec_fuzz(chat LIBS specdec SOURCES ${fuzz_src}/fuzz_model.c)
if(TARGET sd_serve AND SPECDEC_HAVE_SERVE)
  specdec_fuzz(openai_request LIBS sd_serve SOURCES ${fuzz_src}/fuzz_model.c)
  specdec_fuzz(sse LIBS sd_serve)
  # the option parsers are static: fuzz_cli_<command>.c include their sources
  specdec_fuzz(cli LIBS sd_serve specdec
               SOURCES ${fuzz_src}/fuzz_cli_bench.c ${fuzz_src}/fuzz_cli_commbench.c
                       ${fuzz_src}/fuzz_cli_hangtest.c ${fuzz_src}/fuzz_cli_launch.c
                       ${fuzz_src}/fuzz_cli_serve.c ${PROJECT_SOURCE_DIR}/apps/cli/cli_common.c
                       ${PROJECT_SOURCE_DIR}/apps/cli/launch.c
                       ${PROJECT_SOURCE_DIR}/apps/cli/trace.c)
endif()

# The corpora against independent references (label reference, as tests/reference): the
# tokenizer's ids against HF `tokenizers`, the chat renderings against jinja2.
add_test(NAME reference_fuzz_tokenizer_hf
         COMMAND python3 ${fuzz_src}/tokenizer_hf.py --dump $<TARGET_FILE:sd_ref_dump>
                 ${fuzz_src}/tokenizer)
add_test(NAME reference_fuzz_chat_jinja
         COMMAND python3 ${fuzz_src}/chat_jinja.py $<TARGET_FILE:fuzz_chat> ${fuzz_src}/chat)
set_tests_properties(reference_fuzz_tokenizer_hf reference_fuzz_chat_jinja PROPERTIES
                     LABELS "cpu;reference" SKIP_RETURN_CODE 77 TIMEOUT 600)
