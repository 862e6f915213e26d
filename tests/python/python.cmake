# The Python package (python/) against this build's libspecdec.so: its pytest suite, a
# `pip install` of it, and the library's exported symbols. Not in sanitizer builds: the
# interpreter would need the sanitizer's runtime preloaded (the C code under them is tested
# by the Criterion tests of that pass).
add_executable(py_helper ${CMAKE_CURRENT_SOURCE_DIR}/python/py_helper.c)
target_link_libraries(py_helper PRIVATE sd_gguf)
add_test(NAME lib_exports COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/python/check_exports.sh
         $<TARGET_FILE:specdec_shared> ${PROJECT_SOURCE_DIR}/include/specdec/specdec.h)
set_tests_properties(lib_exports PROPERTIES LABELS cpu TIMEOUT 60)
if(SPECDEC_SANITIZE STREQUAL "")
  add_test(NAME python_pytest COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/python/run_pytest.sh
           $<TARGET_FILE:specdec_shared> $<TARGET_FILE:py_helper> $<TARGET_FILE:specdec_cli>
           ${PROJECT_SOURCE_DIR})
  add_test(NAME python_pip_install COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/python/test_pip_install.sh
           $<TARGET_FILE:specdec_shared> $<TARGET_FILE:py_helper> ${PROJECT_SOURCE_DIR})
  set_tests_properties(python_pytest python_pip_install PROPERTIES
                       LABELS cpu SKIP_RETURN_CODE 77 TIMEOUT 300)
endif()
