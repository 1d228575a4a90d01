// SPDX-License-Identifier: Apache-2.0
// SIGBUS recovery with sigsetjmp: only faults inside guardedCopy() are recovered, others stay fatal.
#include "common/sigbus_guard.h"

#include <atomic>
#include <csetjmp>
#include <csignal>
#include <cstring>
#include <mutex>

namespace vfio_broker {

namespace {
// volatile, and fenced below: memcpy is a builtin, so without them the compiler proves nothing
// reads tJump between the store and the reset and drops the store (seen in the binary).
thread_local sigjmp_buf *volatile tJump = nullptr;

void onSigbus(int sig, siginfo_t *, void *)
{
	if (tJump)
		siglongjmp(*tJump, 1);
	// Not ours: restore the default action and let the fault kill us as it would have.
	signal(sig, SIG_DFL);
	raise(sig);
}
} // namespace

void installSigbusGuard()
{
	static std::once_flag once;
	std::call_once(once, [] {
		struct sigaction sa {};
		sa.sa_sigaction = onSigbus;
		sa.sa_flags = SA_SIGINFO | SA_NODEFER;
		sigemptyset(&sa.sa_mask);
		sigaction(SIGBUS, &sa, nullptr);
	});
}

bool guardedCopy(void *dst, const void *src, size_t len)
{
	sigjmp_buf jump;
	// volatile: the value must survive the longjmp back into this frame.
	volatile bool ok = false;
	if (sigsetjmp(jump, 1) == 0) {
		tJump = &jump;
		std::atomic_signal_fence(std::memory_order_seq_cst);
		std::memcpy(dst, src, len);
		std::atomic_signal_fence(std::memory_order_seq_cst);
		ok = true;
	}
	tJump = nullptr;
	return ok;
}

} // namespace vfio_broker
