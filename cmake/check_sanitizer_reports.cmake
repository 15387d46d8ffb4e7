# Fails when the sanitizer report folder DIR holds any report, printing each one.
# Run by the CTest test sanitizer.no_reports after every other test of a sanitizer build.
file(GLOB reports "${DIR}/*")
if(reports)
  foreach(r IN LISTS reports)
    file(READ "${r}" text)
    message("==== ${r}\n${text}")
  endforeach()
  list(LENGTH reports n)
  message(FATAL_ERROR "${n} sanitizer report(s) under ${DIR}")
endif()
message(STATUS "no sanitizer reports under ${DIR}")
