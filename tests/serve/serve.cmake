# Script tests of `specdec serve` on the default model (skip, 77, when it is not cached):
# curl against every endpoint, and the official `openai` Python client (skip without it).
# Only where the server is built (libmicrohttpd and libcjson found: the target sd_serve).
if(TARGET sd_serve)
  add_test(NAME serve_curl
           COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/serve/test_serve_curl.sh $<TARGET_FILE:specdec_cli>)
  add_test(NAME serve_openai_client
           COMMAND python3 ${CMAKE_CURRENT_SOURCE_DIR}/serve/test_openai_client.py
                   $<TARGET_FILE:specdec_cli>)
  set_tests_properties(serve_curl serve_openai_client PROPERTIES
                       LABELS cpu SKIP_RETURN_CODE 77 TIMEOUT 300)
endif()
