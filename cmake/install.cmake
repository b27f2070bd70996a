# `cmake --install <build> --prefix <dir>` installs:
#   include/green/...                          the public headers
#   lib/libgreenrt.a, lib/libgreenhttp.a       greenhttp::runtime, greenhttp::http
#   lib/cmake/greenhttp/greenhttpConfig.cmake  for find_package(greenhttp CONFIG REQUIRED)
#   lib/pkgconfig/greenhttp.pc                 for pkg-config --cflags --libs greenhttp
#   bin/greenhttp                              the server binary
# Static libraries only: the runtime's hot paths (green::go, the channel templates) inline into
# the user's code either way, and a shared build would need -fPIC everywhere for no gain here.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

install(TARGETS greenrt greenhttp_server EXPORT greenhttpTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(TARGETS greenhttp RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/green DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(EXPORT greenhttpTargets NAMESPACE greenhttp::
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/greenhttp)

configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/greenhttpConfig.cmake.in
                              ${CMAKE_CURRENT_BINARY_DIR}/greenhttpConfig.cmake
                              INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/greenhttp)
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/greenhttpConfigVersion.cmake
                                 COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/greenhttpConfig.cmake
              ${CMAKE_CURRENT_BINARY_DIR}/greenhttpConfigVersion.cmake
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/greenhttp)

# pkg-config (relocatable: the prefix is found from the .pc file's own folder): the static libraries need their dependencies on the link line, so Libs lists
# them (not Libs.private); spdlog's own .pc brings fmt.
set(GREEN_PC_EXTRA_LIBS "")
configure_file(${PROJECT_SOURCE_DIR}/cmake/greenhttp.pc.in ${CMAKE_CURRENT_BINARY_DIR}/greenhttp.pc
               @ONLY)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/greenhttp.pc
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
