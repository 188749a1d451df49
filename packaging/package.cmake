# Packaging: system install rules and the Debian package (cpack -G DEB). Included from the
# top-level CMakeLists.txt right after install(TARGETS keypool ...), which puts the binary in
# <prefix>/bin (/usr/bin in the .deb). packaging/README.md describes the package.

# /etc/keypool and the systemd unit go to absolute paths, as a Debian package needs them.
# A non-root `cmake --install build --prefix ~/keypool` wants -DKEYPOOL_INSTALL_SYSTEM_FILES=OFF
# (or DESTDIR=...).
option(KEYPOOL_INSTALL_SYSTEM_FILES
  "Install /etc/keypool (config, services.d, env example) and /lib/systemd/system/keypool.service" ON)
if(KEYPOOL_INSTALL_SYSTEM_FILES)
  install(FILES ${CMAKE_CURRENT_LIST_DIR}/deb/keypool.yaml ${CMAKE_CURRENT_LIST_DIR}/deb/keypool.env.example
    DESTINATION /etc/keypool)
  install(DIRECTORY ${CMAKE_SOURCE_DIR}/services.d/ DESTINATION /etc/keypool/services.d
    FILES_MATCHING PATTERN "*.yaml")
  install(FILES ${CMAKE_CURRENT_LIST_DIR}/systemd/keypool.service DESTINATION /lib/systemd/system)
endif()

# Every file under /etc/keypool is a conffile: dpkg keeps local edits on upgrade and asks
# before replacing them; `dpkg --purge` deletes them.
set(KEYPOOL_CONFFILES "")
if(KEYPOOL_INSTALL_SYSTEM_FILES)
  set(KEYPOOL_CONFFILES "/etc/keypool/keypool.yaml\n/etc/keypool/keypool.env.example\n")
  file(GLOB KEYPOOL_SERVICE_FILES CONFIGURE_DEPENDS RELATIVE ${CMAKE_SOURCE_DIR}/services.d
    ${CMAKE_SOURCE_DIR}/services.d/*.yaml)
  list(SORT KEYPOOL_SERVICE_FILES)
  foreach(f IN LISTS KEYPOOL_SERVICE_FILES)
    string(APPEND KEYPOOL_CONFFILES "/etc/keypool/services.d/${f}\n")
  endforeach()
endif()
file(CONFIGURE OUTPUT ${CMAKE_BINARY_DIR}/packaging/deb/conffiles CONTENT "${KEYPOOL_CONFFILES}" @ONLY)

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME keypool)
set(CPACK_PACKAGE_VENDOR keypool)
set(CPACK_PACKAGE_CONTACT "keypool maintainers <root@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "API key pooling sidecar reverse proxy")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)
set(CPACK_SOURCE_GENERATOR TGZ)
set(CPACK_SOURCE_IGNORE_FILES "/\\\\.git/;/build/;/data/;/node_modules/")
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)  # keypool_<version>-<release>_<arch>.deb
set(CPACK_DEBIAN_PACKAGE_RELEASE 1)
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_DESCRIPTION "API key pooling sidecar reverse proxy
keypool holds a pool of upstream API keys (encrypted in SQLite), hands requests
to the next key with budget, fails over on 429/401/5xx and exposes an admin API.
Runs as the systemd service keypool.service; secrets go in /etc/keypool/keypool.env.")
# Runtime libraries from dpkg-shlibdeps when it is there (dpkg-dev), else the Debian 12 names.
# passwd: postinst creates the keypool user with useradd. ca-certificates: upstream TLS.
find_program(KEYPOOL_DPKG_SHLIBDEPS dpkg-shlibdeps)
mark_as_advanced(KEYPOOL_DPKG_SHLIBDEPS)
if(KEYPOOL_DPKG_SHLIBDEPS)
  set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
  set(CPACK_DEBIAN_PACKAGE_DEPENDS "passwd")
else()
  set(CPACK_DEBIAN_PACKAGE_DEPENDS
    "libc6, libstdc++6, libgcc-s1, libuv1, libssl3, libyaml-cpp0.7, libsqlite3-0, libjemalloc2, zlib1g, libbrotli1, passwd")
endif()
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS "ca-certificates")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
  ${CMAKE_CURRENT_LIST_DIR}/deb/postinst
  ${CMAKE_CURRENT_LIST_DIR}/deb/prerm
  ${CMAKE_CURRENT_LIST_DIR}/deb/postrm
  ${CMAKE_BINARY_DIR}/packaging/deb/conffiles)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
include(CPack)

# tests/packaging/deb_test.sh as ctest `deb_package`: root only; builds the .deb in a fresh
# temp build dir, installs it with dpkg, runs it, purges it. Off by default: it changes the
# machine (package, user) while it runs.
option(KEYPOOL_DEB_TEST "Register ctest deb_package (root; dpkg -i / --purge the keypool .deb)" OFF)
if(KEYPOOL_DEB_TEST)
  add_test(NAME deb_package COMMAND bash ${CMAKE_SOURCE_DIR}/tests/packaging/deb_test.sh)
  set_tests_properties(deb_package PROPERTIES
    ENVIRONMENT "KEYPOOL_SOURCE_DIR=${CMAKE_SOURCE_DIR}"
    TIMEOUT 1800 RUN_SERIAL ON SKIP_RETURN_CODE 77)
endif()
