# The ThreadSanitizer build (-DSPECDEC_SANITIZE=thread; scripts/test.sh's third pass): the
# multi-threaded suites, built from the same sources against tests/support/runner (a small
# runner with the part of Criterion's API they use: Criterion 2.4 cannot start under TSan,
# its issue #274), each test forked with its own timeout. Included by tests/CMakeLists.txt
# instead of the Criterion tests; labelled `tsan`. Suppressions: tests/tsan.supp.
file(GLOB support_srcs CONFIGURE_DEPENDS support/*.c)
add_library(sd_test_support STATIC ${support_srcs} support/runner/runner.c)
target_include_directories(sd_test_support BEFORE PUBLIC ${CMAKE_CURRENT_SOURCE_DIR}/support/runner)
target_include_directories(sd_test_support PUBLIC ${CMAKE_CURRENT_SOURCE_DIR})
target_link_libraries(sd_test_support PUBLIC sd_core Threads::Threads)
target_compile_definitions(sd_test_support PUBLIC
  SPECDEC_SOURCE_DIR="${PROJECT_SOURCE_DIR}" SPECDEC_BINARY_DIR="${PROJECT_BINARY_DIR}")
file(MAKE_DIRECTORY ${CMAKE_CURRENT_BINARY_DIR}/tmp)

# The scheduler (engine_scheduler*), the thread pool (kernels_ops), comm intra and the
# watchdog (comm_intra, comm_fault), mpi (comm_mpi), concurrent generation and thread
# counts (engine_generate), the thread-local error (core_status), the server (serve_http:
# the TSan-built `specdec serve`, driven by client threads).
set(tsan_tests test_core_status test_kernels_ops test_comm_intra test_comm_fault test_comm_mpi
    test_engine_generate test_engine_scheduler test_engine_scheduler_tp test_serve_http)
pkg_check_modules(CURL IMPORTED_TARGET libcurl)
set(tsan_env "SPECDEC_TEST_TMP=${CMAKE_CURRENT_BINARY_DIR}/tmp" SPECDEC_DEVICE=cpu
    SPECDEC_TEST_SANITIZER_PASS=1 SPECDEC_TEST_TIMEOUT_SCALE=5
    # for the programs the tests start (specdec serve, the mpi ranks); the runner's own
    # settings are the same (tests/support/runner/runner.c)
    "TSAN_OPTIONS=halt_on_error=1 exitcode=66 second_deadlock_stack=1 suppressions=${CMAKE_CURRENT_SOURCE_DIR}/tsan.supp")
foreach(name ${tsan_tests})
  string(REGEX MATCH "^test_([a-z]+)" _ ${name})
  set(module sd_${CMAKE_MATCH_1})
  if(name STREQUAL "test_serve_http" AND NOT (SPECDEC_HAVE_SERVE AND CURL_FOUND))
    continue()
  endif()
  add_executable(${name} ${name}.c)
  target_link_libraries(${name} PRIVATE ${module} sd_test_support)
  add_test(NAME ${name} COMMAND ${name})
  set_tests_properties(${name} PROPERTIES LABELS tsan TIMEOUT 900 ENVIRONMENT "${tsan_env}")
endforeach()
if(TARGET test_serve_http)
  target_link_libraries(test_serve_http PRIVATE PkgConfig::CURL)
  add_dependencies(test_serve_http specdec_cli)
endif()
add_executable(sd_mpi_rank mpi/mpi_rank.c)
target_link_libraries(sd_mpi_rank PRIVATE sd_comm sd_kernels)
add_dependencies(test_comm_mpi sd_mpi_rank)
