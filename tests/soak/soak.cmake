# Long-running checks, label slow (docs/reliability.md): the server under mixed load with its
# resources and /metrics checked, and the hang harness with random faults every few thousand
# steps. SPECDEC_SOAK_SECONDS sets the long soak's duration; soak_serve_short is the same
# check for 60 s.
set(SPECDEC_SOAK_SECONDS 1800 CACHE STRING "seconds of load in the soak_serve test")
if(TARGET sd_serve AND SPECDEC_HAVE_SERVE)
  add_test(NAME soak_serve
           COMMAND python3 ${CMAKE_CURRENT_SOURCE_DIR}/soak/serve_soak.py
                   $<TARGET_FILE:specdec_cli> --duration ${SPECDEC_SOAK_SECONDS} --clients 32)
  add_test(NAME soak_serve_short
           COMMAND python3 ${CMAKE_CURRENT_SOURCE_DIR}/soak/serve_soak.py
                   $<TARGET_FILE:specdec_cli> --duration 60 --clients 32)
  math(EXPR soak_limit "${SPECDEC_SOAK_SECONDS} + 900")
  set_tests_properties(soak_serve PROPERTIES LABELS slow TIMEOUT ${soak_limit} SKIP_RETURN_CODE 77)
  set_tests_properties(soak_serve_short PROPERTIES LABELS slow TIMEOUT 900 SKIP_RETURN_CODE 77)
endif()
add_test(NAME soak_hang_faults
         COMMAND python3 ${CMAKE_CURRENT_SOURCE_DIR}/soak/hang_faults.py
                 $<TARGET_FILE:specdec_cli> --steps 100000 --launchers launch,mpirun)
set_tests_properties(soak_hang_faults PROPERTIES LABELS slow TIMEOUT 7200)
