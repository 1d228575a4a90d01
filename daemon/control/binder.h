// SPDX-License-Identifier: Apache-2.0
// Driver binding through sysfs: to vfio-pci (or vfio-platform/vfio-amba) and back, verified.
#pragma once

#include <chrono>
#include <string>

#include "common/result.h"
#include "vfio_broker/v1/broker.pb.h"

namespace vfio_broker::control {

namespace pb = ::vfio_broker::v1;

// What a device was bound to before we took it; persisted so it survives our restarts.
struct BindRecord {
	std::string originalDriver;   // "" when it had none
	std::string originalOverride; // its driver_override before ours ("" for none)
};

class Binder
{
public:
	// kernelRelease: as InventoryOptions::kernelRelease ("" = uname), for explaining a platform
	// device that does not bind.
	Binder(std::string sysfsRoot, std::chrono::milliseconds timeout, std::string kernelRelease = "")
		: root_(std::move(sysfsRoot)), timeout_(timeout), kernelRelease_(std::move(kernelRelease)) {}
	virtual ~Binder() = default;

	// Record the current driver, set driver_override to the VFIO driver for the device's bus,
	// unbind the current driver, trigger drivers_probe, and wait (up to the timeout) until the
	// driver link really names the VFIO driver: sysfs writes succeed even when nothing binds.
	// (Override before unbind, as libvirt does, so nothing can re-probe the host driver in
	// between.) On failure the device is put back as restore() would, and the error says
	// whether that worked. Already on a VFIO driver (vfio-pci or a variant such as
	// mlx5_vfio_pci): nothing to do, the record says so. Simulated devices: no-op.
	// Platform and AMBA devices go to vfio-platform / vfio-amba the same way; when nothing
	// binds, the error gives the cause platformOutlook finds (no reset handler with
	// reset_required=Y, Linux 6.1's ENOENT probe failure, no IOMMU group without no-IOMMU mode)
	// rather than a bare timeout. Only paths under <root>/devices/platform are written to.
	virtual Result<BindRecord> bindToVfio(const pb::Device &device);

	// Undo bindToVfio: unbind from VFIO, restore the recorded override (cleared with "\n",
	// since an empty write is refused), and bind the original driver (explicit bind, then
	// drivers_probe as a fallback), verified. No original driver: left unbound. Idempotent:
	// a device already on its original driver with its override only has nothing written.
	// A device bound meanwhile to some other non-VFIO driver is left alone (EBUSY).
	virtual Status restore(const pb::Device &device, const BindRecord &record);

	// The driver bound now ("" for none).
	Result<std::string> currentDriver(const pb::Device &device) const;

private:
	std::string root_;
	std::chrono::milliseconds timeout_;
	std::string kernelRelease_;
};

// The VFIO driver for a device's bus: vfio-pci, vfio-platform or vfio-amba.
std::string vfioDriverFor(const pb::Device &device);

} // namespace vfio_broker::control
