// SPDX-License-Identifier: Apache-2.0
// placeholder until the fake sysfs is written
