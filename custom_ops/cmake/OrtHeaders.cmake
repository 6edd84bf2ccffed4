# Locating onnxruntime's C/C++ headers. The library links against no onnxruntime
# binary (it gets every function from the OrtApi table at load time), so the headers
# are all it needs, and the PyPI wheel does not ship them.
#
# Order: (a) a directory the user names, (b) the system, (c) the Debian package
# libonnxruntime-dev fetched with a private apt configuration, (d) the official
# release tarball. (c) and (d) are done by fetch_ort_headers.py and cached in the
# build directory. Defines exprune_find_ort_headers(<out_var>).

set(ONNXRUNTIME_INCLUDE_DIR "" CACHE PATH
    "Directory holding onnxruntime_cxx_api.h (or its onnxruntime/ subdirectory)")
option(EXPRUNE_FETCH_ORT_HEADERS
    "If no headers are found locally, download them (Debian package, then release tarball)" ON)
set(EXPRUNE_ORT_VERSION "1.21.0" CACHE STRING
    "onnxruntime release whose tarball the last download route fetches")
set(EXPRUNE_ORT_DEBIAN_SUITE "trixie" CACHE STRING
    "Debian suite that provides libonnxruntime-dev for the apt route")

# Accept both the directory of the headers and a prefix's include/ above it.
function(_exprune_headers_in dir out_var)
  set(${out_var} "" PARENT_SCOPE)
  foreach(sub "" "/onnxruntime" "/onnxruntime/core/session")
    if(EXISTS "${dir}${sub}/onnxruntime_cxx_api.h")
      get_filename_component(found "${dir}${sub}" ABSOLUTE)
      set(${out_var} "${found}" PARENT_SCOPE)
      return()
    endif()
  endforeach()
endfunction()

function(exprune_find_ort_headers out_var)
  set(tried "")

  # (a) named by the user: a wrong name is an error, not something to paper over.
  set(user_dir "${ONNXRUNTIME_INCLUDE_DIR}")
  set(user_src "CMake variable ONNXRUNTIME_INCLUDE_DIR")
  if(NOT user_dir AND DEFINED ENV{ONNXRUNTIME_INCLUDE_DIR} AND NOT "$ENV{ONNXRUNTIME_INCLUDE_DIR}" STREQUAL "")
    set(user_dir "$ENV{ONNXRUNTIME_INCLUDE_DIR}")
    set(user_src "environment variable ONNXRUNTIME_INCLUDE_DIR")
  endif()
  if(user_dir)
    _exprune_headers_in("${user_dir}" found)
    if(NOT found)
      message(FATAL_ERROR
        "onnxruntime headers: the ${user_src} names '${user_dir}', but neither it nor "
        "its onnxruntime/ subdirectory contains onnxruntime_cxx_api.h. Point it at the "
        "directory holding the headers (e.g. <onnxruntime>/include), or unset it to let "
        "the build find or download them.")
    endif()
    message(STATUS "onnxruntime headers: ${found} (route: user-named directory, ${user_src})")
    set(${out_var} "${found}" PARENT_SCOPE)
    return()
  endif()
  list(APPEND tried "ONNXRUNTIME_INCLUDE_DIR: not set")

  # (b) the system, including any prefix the user added to CMAKE_PREFIX_PATH.
  set(prefixes ${CMAKE_PREFIX_PATH} ${CMAKE_SYSTEM_PREFIX_PATH} /usr/local /usr /opt/onnxruntime)
  list(REMOVE_DUPLICATES prefixes)
  foreach(prefix IN LISTS prefixes)
    if(prefix STREQUAL CMAKE_INSTALL_PREFIX)
      continue()  # the wheel's staging prefix, never a source of headers
    endif()
    _exprune_headers_in("${prefix}/include" found)
    if(found)
      message(STATUS "onnxruntime headers: ${found} (route: system)")
      set(${out_var} "${found}" PARENT_SCOPE)
      return()
    endif()
  endforeach()
  list(JOIN prefixes ", " prefix_text)
  list(APPEND tried "system: no include/onnxruntime/onnxruntime_cxx_api.h under ${prefix_text}")

  # (c) + (d): downloads, cached in the build tree.
  if(NOT EXPRUNE_FETCH_ORT_HEADERS)
    list(APPEND tried "downloads: disabled (EXPRUNE_FETCH_ORT_HEADERS=OFF)")
  else()
    find_package(Python COMPONENTS Interpreter)
    if(NOT Python_Interpreter_FOUND)
      list(APPEND tried "downloads: no Python interpreter to run fetch_ort_headers.py")
    else()
      set(cache_dir "${CMAKE_BINARY_DIR}/onnxruntime_headers")
      message(STATUS "onnxruntime headers: not on the system; trying the download cache / "
                     "Debian package (${EXPRUNE_ORT_DEBIAN_SUITE}) / release tarball ${EXPRUNE_ORT_VERSION}")
      execute_process(
        COMMAND "${Python_EXECUTABLE}" "${PROJECT_SOURCE_DIR}/fetch_ort_headers.py"
                --dest "${cache_dir}" --version "${EXPRUNE_ORT_VERSION}"
                --suite "${EXPRUNE_ORT_DEBIAN_SUITE}"
        RESULT_VARIABLE rc
        OUTPUT_VARIABLE out
        ERROR_VARIABLE err)
      string(REGEX MATCH "route=([^\n]*)" _ "${out}")
      set(route "${CMAKE_MATCH_1}")
      string(REGEX MATCH "include=([^\n]*)" _ "${out}")
      set(found "${CMAKE_MATCH_1}")
      if(rc EQUAL 0 AND EXISTS "${found}/onnxruntime_cxx_api.h")
        message(STATUS "onnxruntime headers: ${found} (route: ${route})")
        set(${out_var} "${found}" PARENT_SCOPE)
        return()
      endif()
      # The script's closing summary says per route why it failed; its progress
      # lines before that would only repeat it.
      string(FIND "${err}" "no route worked:" at)
      if(at GREATER -1)
        string(SUBSTRING "${err}" ${at} -1 err)
      endif()
      string(STRIP "${err}" err)
      list(APPEND tried "downloads (fetch_ort_headers.py, exit ${rc}): ${err}")
    endif()
  endif()

  list(JOIN tried "\n  - " tried_text)
  message(FATAL_ERROR
    "onnxruntime headers not found. Tried:\n  - ${tried_text}\n"
    "The onnxruntime PyPI wheel ships no headers. Get them from the release tarball "
    "onnxruntime-linux-<arch>-<version>.tgz (its include/ directory) or your system's "
    "libonnxruntime-dev package, then build with ONNXRUNTIME_INCLUDE_DIR=<that include dir> "
    "in the environment (or -DONNXRUNTIME_INCLUDE_DIR=... for CMake).")
endfunction()
