# Each public header compiles alone, with only include/ on the include path: a header that
# forgot an #include, or that reaches into runtime/, server/ or <llhttp.h>, fails the build.
# Warnings are errors here because they would be the user's warnings: these headers are
# compiled in every translation unit of a project built on greenhttp.
if(NOT PROJECT_IS_TOP_LEVEL)
  return()
endif()
file(GLOB_RECURSE GREEN_PUBLIC_HEADERS CONFIGURE_DEPENDS RELATIVE ${PROJECT_SOURCE_DIR}/include
     ${PROJECT_SOURCE_DIR}/include/*.h)
set(GREEN_HEADER_CHECK_SOURCES)
foreach(header IN LISTS GREEN_PUBLIC_HEADERS)
  string(MAKE_C_IDENTIFIER ${header} id)
  set(src ${CMAKE_CURRENT_BINARY_DIR}/header_check/${id}.cpp)
  file(CONFIGURE OUTPUT ${src} CONTENT "#include <${header}>\n#include <${header}>  // include guard\n")
  list(APPEND GREEN_HEADER_CHECK_SOURCES ${src})
endforeach()
add_library(green_public_header_check OBJECT ${GREEN_HEADER_CHECK_SOURCES})
target_include_directories(green_public_header_check PRIVATE ${PROJECT_SOURCE_DIR}/include)
target_compile_options(green_public_header_check PRIVATE -Wall -Wextra -Wpedantic -Werror)
