#include "common.h"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>

#include <poll.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace sdh {

namespace {

// A short rendering of a JS value for error messages: numbers as numbers, strings quoted, else the type.
std::string Show(Napi::Value v) {
  char buf[64];
  switch (v.Type()) {
    case napi_undefined: return "undefined";
    case napi_null: return "null";
    case napi_boolean: return v.As<Napi::Boolean>().Value() ? "true" : "false";
    case napi_number: {
      double d = v.As<Napi::Number>().DoubleValue();
      snprintf(buf, sizeof buf, "%.17g", d);
      return buf;
    }
    case napi_string: {
      std::string s = v.As<Napi::String>().Utf8Value();
      if (s.size() > 40) s = s.substr(0, 40) + "...";
      return "\"" + s + "\"";
    }
    case napi_bigint: return "a bigint";
    case napi_symbol: return "a symbol";
    case napi_function: return "a function";
    default: return v.IsArray() ? "an array" : "an object";
  }
}

Napi::Value Arg(const Napi::CallbackInfo& info, size_t i) {
  return i < info.Length() ? info[i] : info.Env().Undefined();
}

bool IsInteger(Napi::Value v, int64_t min, int64_t max, int64_t* out) {
  if (!v.IsNumber()) return false;
  double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d) || std::trunc(d) != d || d < static_cast<double>(min) || d > static_cast<double>(max))
    return false;
  *out = static_cast<int64_t>(d);
  return true;
}

Napi::Object Details(Napi::Env env) { return Napi::Object::New(env); }

Napi::Value Construct(Napi::Env env, const std::string& message, Napi::Object details) {
  auto* data = env.GetInstanceData<AddonData>();
  if (data != nullptr && !data->errorCtor.IsEmpty()) {
    Napi::Object obj = data->errorCtor.New({Napi::String::New(env, message), details});
    if (!env.IsExceptionPending()) return obj;
    // The constructor itself threw: surface that exception rather than hiding it.
    return env.GetAndClearPendingException().Value();
  }
  // setErrorClass was never called (only the loader calls it): a plain Error with the same fields.
  Napi::Object err = Napi::Error::New(env, message.empty() ? "sd-handoff native error" : message).Value();
  Napi::Array keys = details.GetPropertyNames();
  for (uint32_t k = 0; k < keys.Length(); k++) {
    Napi::Value key = keys.Get(k);
    err.Set(key, details.Get(key));
  }
  return err;
}

}  // namespace

Napi::Value MakeSysError(Napi::Env env, const SysError& e) {
  Napi::Object d = Details(env);
  d.Set("errno", Napi::Number::New(env, e.err));
  d.Set("syscall", Napi::String::New(env, e.syscall));
  if (e.hasPath) d.Set("path", Napi::String::New(env, e.path.data(), e.path.size()));
  if (e.hasFd) d.Set("fd", Napi::Number::New(env, e.fd));
  return Construct(env, "", d);
}

Napi::Value MakeCodeError(Napi::Env env, const char* code, const std::string& message, Napi::Object extra) {
  Napi::Object d = extra.IsEmpty() ? Details(env) : extra;
  d.Set("code", Napi::String::New(env, code));
  return Construct(env, message, d);
}

void Throw(Napi::Env env, Napi::Value error) {
  if (env.IsExceptionPending()) return;  // keep the first failure
  napi_throw(env, error);
}

void ThrowSys(Napi::Env env, int err, const char* syscall, int fd) {
  SysError e;
  e.err = err;
  e.syscall = syscall;
  if (fd >= 0) {
    e.hasFd = true;
    e.fd = fd;
  }
  Throw(env, MakeSysError(env, e));
}

void ThrowSysPath(Napi::Env env, int err, const char* syscall, const std::string& path) {
  SysError e;
  e.err = err;
  e.syscall = syscall;
  e.hasPath = true;
  e.path = path;
  Throw(env, MakeSysError(env, e));
}

void ThrowInvalid(Napi::Env env, const std::string& message) {
  Throw(env, MakeCodeError(env, "SDH_INVALID_OPTION", message));
}

bool ArgFd(const Napi::CallbackInfo& info, size_t i, const char* fn, const char* name, int* out) {
  int64_t v;
  if (!IsInteger(Arg(info, i), 0, INT32_MAX, &v)) {
    ThrowInvalid(info.Env(), std::string(fn) + ": " + name + " must be a file descriptor (an integer >= 0), got " +
                                 Show(Arg(info, i)));
    return false;
  }
  *out = static_cast<int>(v);
  return true;
}

bool ArgInt(const Napi::CallbackInfo& info, size_t i, const char* fn, const char* name, int64_t min, int64_t max,
            int64_t* out) {
  if (!IsInteger(Arg(info, i), min, max, out)) {
    ThrowInvalid(info.Env(), std::string(fn) + ": " + name + " must be an integer from " + std::to_string(min) +
                                 " to " + std::to_string(max) + ", got " + Show(Arg(info, i)));
    return false;
  }
  return true;
}

bool ArgOptInt(const Napi::CallbackInfo& info, size_t i, const char* fn, const char* name, int64_t min, int64_t max,
               int64_t dflt, int64_t* out) {
  if (Arg(info, i).IsUndefined()) {
    *out = dflt;
    return true;
  }
  return ArgInt(info, i, fn, name, min, max, out);
}

bool ArgBool(const Napi::CallbackInfo& info, size_t i, const char* fn, const char* name, bool* out) {
  Napi::Value v = Arg(info, i);
  if (!v.IsBoolean()) {
    ThrowInvalid(info.Env(), std::string(fn) + ": " + name + " must be a boolean, got " + Show(v));
    return false;
  }
  *out = v.As<Napi::Boolean>().Value();
  return true;
}

bool ArgString(const Napi::CallbackInfo& info, size_t i, const char* fn, const char* name, std::string* out) {
  Napi::Value v = Arg(info, i);
  if (!v.IsString() || v.As<Napi::String>().Utf8Value().empty()) {
    ThrowInvalid(info.Env(), std::string(fn) + ": " + name + " must be a non-empty string, got " + Show(v));
    return false;
  }
  *out = v.As<Napi::String>().Utf8Value();
  return true;
}

bool ArgBuffer(const Napi::CallbackInfo& info, size_t i, const char* fn, const char* name, const uint8_t** data,
               size_t* len) {
  Napi::Value v = Arg(info, i);
  if (!v.IsBuffer()) {
    ThrowInvalid(info.Env(), std::string(fn) + ": " + name + " must be a Buffer, got " + Show(v));
    return false;
  }
  void* p = nullptr;
  size_t n = 0;
  napi_get_buffer_info(info.Env(), v, &p, &n);
  *data = static_cast<const uint8_t*>(p);
  *len = n;
  return true;
}

bool ArgFds(const Napi::CallbackInfo& info, size_t i, const char* fn, const char* name, std::vector<int>* out) {
  Napi::Env env = info.Env();
  Napi::Value v = Arg(info, i);
  if (!v.IsArray()) {
    ThrowInvalid(env, std::string(fn) + ": " + name + " must be an array of file descriptors, got " + Show(v));
    return false;
  }
  Napi::Array arr = v.As<Napi::Array>();
  uint32_t n = arr.Length();
  if (n > kMaxFds) {
    Napi::Object extra = Napi::Object::New(env);
    extra.Set("count", Napi::Number::New(env, n));
    extra.Set("max", Napi::Number::New(env, static_cast<double>(kMaxFds)));
    Throw(env, MakeCodeError(env, "SDH_TOO_MANY_FDS",
                             std::string(fn) + ": " + std::to_string(n) + " fds in one message; at most " +
                                 std::to_string(kMaxFds) + " fit (SCM_MAX_FD), send them in chunks",
                             extra));
    return false;
  }
  out->clear();
  out->reserve(n);
  for (uint32_t k = 0; k < n; k++) {
    int64_t fd;
    Napi::Value e = arr.Get(k);
    if (!IsInteger(e, 0, INT32_MAX, &fd)) {
      ThrowInvalid(env, std::string(fn) + ": " + name + "[" + std::to_string(k) +
                            "] must be a file descriptor (an integer >= 0), got " + Show(e));
      return false;
    }
    out->push_back(static_cast<int>(fd));
  }
  return true;
}

bool ArgTimeout(const Napi::CallbackInfo& info, size_t i, const char* fn, int* out) {
  int64_t v = 0;
  if (!ArgInt(info, i, fn, "timeoutMs", 0, INT32_MAX, &v)) return false;
  *out = static_cast<int>(v);
  return true;
}

int MakeUnixAddr(const std::string& path, UnixAddr* out) {
  memset(&out->sa, 0, sizeof out->sa);
  out->sa.sun_family = AF_UNIX;
  const size_t room = sizeof out->sa.sun_path;  // 108
  if (path[0] == '@') {
    // Abstract: a leading zero byte, then the name; the address length ends exactly at the name.
    size_t n = path.size() - 1;
    if (1 + n > room) return ENAMETOOLONG;
    out->sa.sun_path[0] = '\0';
    memcpy(out->sa.sun_path + 1, path.data() + 1, n);
    out->len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + n);
  } else {
    // Filesystem path, NUL-terminated inside sun_path.
    if (path.size() + 1 > room) return ENAMETOOLONG;
    memcpy(out->sa.sun_path, path.data(), path.size());
    out->len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size() + 1);
  }
  return 0;
}

ssize_t SendMsg(int sock, const sockaddr* addr, socklen_t addrlen, const uint8_t* data, size_t len, const int* fds,
                size_t nfds, int flags) {
  struct iovec iov;
  iov.iov_base = const_cast<uint8_t*>(data);
  iov.iov_len = len;
  struct msghdr msg;
  memset(&msg, 0, sizeof msg);
  msg.msg_name = const_cast<sockaddr*>(addr);
  msg.msg_namelen = addr ? addrlen : 0;
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  // Aligned control buffer big enough for SCM_MAX_FD fds.
  union {
    char buf[CMSG_SPACE(sizeof(int) * kMaxFds)];
    struct cmsghdr align;
  } control;
  if (nfds > 0) {
    memset(control.buf, 0, sizeof control.buf);
    msg.msg_control = control.buf;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
    struct cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
    memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
  }
  for (;;) {
    ssize_t n = sendmsg(sock, &msg, flags | MSG_NOSIGNAL);
    if (n >= 0) return n;
    if (errno != EINTR) return -errno;
  }
}

int FStat(int fd, struct stat* st) {
  // The kernel's struct stat is glibc's on the 64-bit ABIs (x86_64, aarch64, ...), the only ones built for.
  static_assert(sizeof(void*) == 8, "sd_handoff: FStat assumes a 64-bit Linux ABI");
  if (syscall(SYS_fstat, fd, st) == 0) return 0;
  return errno;
}

int64_t NowMs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

int WaitFor(int fd, short events, int64_t deadline) {
  for (;;) {
    int64_t left = deadline - NowMs();
    if (left < 0) left = 0;
    struct pollfd p;
    p.fd = fd;
    p.events = events;
    p.revents = 0;
    int r = poll(&p, 1, static_cast<int>(left));
    if (r < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (r == 0) return ETIMEDOUT;
    if (p.revents & POLLNVAL) return EBADF;
    // Readable, writable, or POLLHUP/POLLERR: the following recvmsg/sendmsg reports what happened.
    return 0;
  }
}

}  // namespace sdh
