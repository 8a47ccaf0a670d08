// Shared helpers of the sd_handoff addon: the error objects it throws (instances of the TypeScript
// SdHandoffError class handed over by setErrorClass), argument checks, unix socket addresses and the
// EINTR-safe primitives the synchronous and asynchronous calls share.
//
// glibc: the addon is built on glibc 2.36 but its prebuilds must load on 2.28 (Debian buster, RHEL 8), so only
// libc functions older than 2.28 are used; fstat goes through syscall() because glibc >= 2.33 exports it as
// fstat@GLIBC_2.33.
#pragma once

#include <napi.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

namespace sdh {

// SCM_MAX_FD in the kernel: the most fds one sendmsg may carry.
constexpr size_t kMaxFds = 253;

// Per-environment state (worker threads load the addon once each).
struct AddonData {
  Napi::FunctionReference errorCtor;
};

// What a failed system call leaves behind, built off the JS thread and turned into an error object on it.
struct SysError {
  int err = 0;                // positive errno; 0 = no error
  const char* syscall = "";  // static string
  bool hasPath = false;
  std::string path;
  bool hasFd = false;
  int fd = -1;
};

// new Ctor('', { errno, syscall, path?, fd? }) (or a plain Error if setErrorClass was never called).
Napi::Value MakeSysError(Napi::Env env, const SysError& e);
// new Ctor(message, { code, ...extra })
Napi::Value MakeCodeError(Napi::Env env, const char* code, const std::string& message,
                          Napi::Object extra = Napi::Object());

// Throw helpers; the caller returns right after (C++ exceptions are disabled).
void ThrowSys(Napi::Env env, int err, const char* syscall, int fd = -1);
void ThrowSysPath(Napi::Env env, int err, const char* syscall, const std::string& path);
void ThrowInvalid(Napi::Env env, const std::string& message);
void Throw(Napi::Env env, Napi::Value error);

// Argument readers: on a bad value they throw SDH_INVALID_OPTION naming the function and argument, and return false.
bool ArgFd(const Napi::CallbackInfo& info, size_t i, const char* fn, const char* name, int* out);
bool ArgInt(const Napi::CallbackInfo& info, size_t i, const char* fn, const char* name, int64_t min, int64_t max,
            int64_t* out);
bool ArgOptInt(const Napi::CallbackInfo& info, size_t i, const char* fn, const char* name, int64_t min, int64_t max,
               int64_t dflt, int64_t* out);
bool ArgBool(const Napi::CallbackInfo& info, size_t i, const char* fn, const char* name, bool* out);
bool ArgString(const Napi::CallbackInfo& info, size_t i, const char* fn, const char* name, std::string* out);
bool ArgBuffer(const Napi::CallbackInfo& info, size_t i, const char* fn, const char* name, const uint8_t** data,
               size_t* len);
// An array of at most 253 fds; more throws SDH_TOO_MANY_FDS (the TypeScript layer chunks, the addon refuses).
bool ArgFds(const Napi::CallbackInfo& info, size_t i, const char* fn, const char* name, std::vector<int>* out);
// A timeout in ms: an integer from 0 to INT32_MAX (poll's range). No "forever": a thread-pool thread is never
// blocked without bound.
bool ArgTimeout(const Napi::CallbackInfo& info, size_t i, const char* fn, int* out);

// A unix socket address: "@name" is abstract (sun_path[0] = 0, exact length, no trailing zeros), anything else a
// filesystem path. Returns 0 or ENAMETOOLONG.
struct UnixAddr {
  sockaddr_un sa;
  socklen_t len;
};
int MakeUnixAddr(const std::string& path, UnixAddr* out);

// sendmsg with SCM_RIGHTS (when fds is non-empty), MSG_NOSIGNAL, retried on EINTR. Returns bytes or -errno.
ssize_t SendMsg(int sock, const sockaddr* addr, socklen_t addrlen, const uint8_t* data, size_t len,
                const int* fds, size_t nfds, int flags);

// fstat through the raw system call (see the header comment). Returns 0 or errno.
int FStat(int fd, struct stat* st);

// CLOCK_MONOTONIC in ms, and poll() for `events` until `deadline`. Returns 0 when ready, ETIMEDOUT, or an errno
// (EBADF for POLLNVAL).
int64_t NowMs();
int WaitFor(int fd, short events, int64_t deadline);

}  // namespace sdh
