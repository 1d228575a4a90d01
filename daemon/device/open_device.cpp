// SPDX-License-Identifier: Apache-2.0
// Maps --device to a backend; the server never learns which one it drives.
#include "device/open_device.h"

#include "device/sim_edu.h"
#include "device/sim_platform.h"
#include "device/vfio_pci.h"
#include "device/vfio_platform.h"

namespace vfio_broker::device {

Result<std::unique_ptr<Device>> openDevice(const std::string &spec, const OpenOptions &opts)
{
	if (spec.rfind("sim:", 0) == 0) {
		if (spec == "sim:edu") {
			auto dev = SimEdu::create();
			if (!dev)
				return dev.takeError();
			return std::unique_ptr<Device>(std::move(*dev));
		}
		if (spec == sim_platform::kId) {
			auto dev = SimPlatform::create();
			if (!dev)
				return dev.takeError();
			return std::unique_ptr<Device>(std::move(*dev));
		}
		return makeError(ENODEV, "unknown simulated device \"%s\" (available: sim:edu, sim:platform)",
				 spec.c_str());
	}
	VfioOpenOptions vopts;
	vopts.sysfsRoot = opts.sysfsRoot;
	vopts.devRoot = opts.devRoot;
	vopts.allowMmap = opts.allowMmap;
	// platform:NAME, amba:NAME and sysfs paths of platform/AMBA devices: vfio-platform or vfio-amba.
	if (namesPlatformDevice(opts.sysfsRoot, spec))
		return openVfioPlatformDevice(spec, vopts);
	return openVfioPciDevice(spec, vopts);
}

} // namespace vfio_broker::device
