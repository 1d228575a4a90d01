// SPDX-License-Identifier: Apache-2.0
// placeholder until this module is written
