// SPDX-License-Identifier: Apache-2.0
// The Catch2 v2 main, compiled once and unoptimised (it is the slowest TU to build).
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
#include <catch2/catch_reporter_tap.hpp>
