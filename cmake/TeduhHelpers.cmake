# teduh_library(NAME <name> ALIAS <ns::name> SOURCES ... DEPS ...)
# Every module library is made the same way: public headers under include/,
# warnings as errors for our own code, position-independent (the C ABI links it).
function(teduh_library)
  cmake_parse_arguments(T "" "NAME;ALIAS" "SOURCES;DEPS;PRIVATE_DEPS" ${ARGN})
  add_library(${T_NAME} STATIC ${T_SOURCES})
  add_library(${T_ALIAS} ALIAS ${T_NAME})
  target_include_directories(${T_NAME} PUBLIC ${CMAKE_CURRENT_SOURCE_DIR}/include)
  target_link_libraries(${T_NAME} PUBLIC ${T_DEPS} PRIVATE ${T_PRIVATE_DEPS})
  teduh_warnings(${T_NAME})
  set_target_properties(${T_NAME} PROPERTIES POSITION_INDEPENDENT_CODE ON)
endfunction()

# teduh_executable(NAME <name> SOURCES ... DEPS ...)
function(teduh_executable)
  cmake_parse_arguments(T "" "NAME" "SOURCES;DEPS" ${ARGN})
  add_executable(${T_NAME} ${T_SOURCES})
  target_link_libraries(${T_NAME} PRIVATE ${T_DEPS})
  teduh_warnings(${T_NAME})
endfunction()

# teduh_test(NAME <name> SOURCES ... DEPS ...): a GoogleTest binary registered with CTest.
function(teduh_test)
  cmake_parse_arguments(T "" "NAME;TIMEOUT" "SOURCES;DEPS;LABELS" ${ARGN})
  add_executable(${T_NAME} ${T_SOURCES})
  target_link_libraries(${T_NAME} PRIVATE ${T_DEPS} GTest::gtest GTest::gmock GTest::gtest_main)
  teduh_warnings(${T_NAME})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 300)
  endif()
  add_test(NAME ${T_NAME} COMMAND ${T_NAME})
  set_tests_properties(${T_NAME} PROPERTIES TIMEOUT ${T_TIMEOUT} LABELS "${T_LABELS}")
endfunction()

function(teduh_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wno-unused-parameter -Werror=return-type
                                           -Werror=uninitialized)
endfunction()
