// sd_handoff: the system calls Node lacks, nothing more (see src/native.ts for the typed interface).
//
// sendmsg/recvmsg with SCM_RIGHTS and SCM_CREDENTIALS on unix sockets (abstract addresses with their exact length,
// which Node gets wrong), fstat/getsockopt/getsockname on any fd (to check inherited LISTEN_FDS before Node sees
// them), fcntl/dup3, memfd_create + seals (journald's large-entry path), SO_PEERCRED, and unix listeners bound
// here so that libuv never unlinks a path handed over to the next process. Parsing, chunking and policy
// are TypeScript. Every fd made here is CLOEXEC; every failure is thrown as an instance of the SdHandoffError
// class handed over by setErrorClass, carrying errno, syscall and the fd or path.
#include <napi.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/prctl.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "async.h"
#include "common.h"

// Older kernel headers may lack these (all are Linux >= 3.17 / glibc >= 2.27).
#ifndef MFD_CLOEXEC
#define MFD_CLOEXEC 0x0001U
#endif
#ifndef MFD_ALLOW_SEALING
#define MFD_ALLOW_SEALING 0x0002U
#endif
#ifndef F_ADD_SEALS
#define F_ADD_SEALS 1033
#define F_SEAL_SEAL 0x0001
#define F_SEAL_SHRINK 0x0002
#define F_SEAL_GROW 0x0004
#define F_SEAL_WRITE 0x0008
#endif

namespace sdh {
namespace {

Napi::Value Undef(const Napi::CallbackInfo& info) { return info.Env().Undefined(); }

// close() that keeps errno of the failure being reported.
void CloseQuietly(int fd) {
  int saved = errno;
  close(fd);
  errno = saved;
}

// SO_SNDBUF, then SO_SNDBUFFORCE when the limit (net.core.wmem_max) capped it and we are allowed more.
int RaiseSndbuf(int sock, int want) {
  if (setsockopt(sock, SOL_SOCKET, SO_SNDBUF, &want, sizeof want) < 0) return errno;
  int got = 0;
  socklen_t l = sizeof got;
  // The kernel reports double what was set; compare against that.
  if (getsockopt(sock, SOL_SOCKET, SO_SNDBUF, &got, &l) == 0 && got / 2 < want)
    setsockopt(sock, SOL_SOCKET, SO_SNDBUFFORCE, &want, sizeof want);  // EPERM without CAP_NET_ADMIN: fine
  return 0;
}

// A new AF_UNIX SOCK_DGRAM socket, CLOEXEC, with SO_SNDBUF raised if asked. Throws and returns -1 on failure.
int NewDgram(Napi::Env env, int64_t sndbuf) {
  int s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) {
    ThrowSys(env, errno, "socket");
    return -1;
  }
  if (sndbuf > 0) {
    int r = RaiseSndbuf(s, static_cast<int>(sndbuf));
    if (r != 0) {
      close(s);
      ThrowSys(env, r, "setsockopt");
      return -1;
    }
  }
  return s;
}

Napi::Value SetErrorClass(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsFunction()) {
    // There is no class to build an instance of yet: a TypeError object is the honest fallback.
    Napi::TypeError::New(env, "setErrorClass: ctor must be a class (the SdHandoffError constructor)")
        .ThrowAsJavaScriptException();
    return Undef(info);
  }
  env.GetInstanceData<AddonData>()->errorCtor = Napi::Persistent(info[0].As<Napi::Function>());
  return Undef(info);
}

// sendmsg of one datagram on `sock` to `path`; throws on failure. Returns bytes sent or -1.
ssize_t SendDatagramOn(Napi::Env env, int sock, const std::string& path, const uint8_t* data, size_t len,
                       const std::vector<int>& fds, int flags) {
  UnixAddr addr;
  int r = MakeUnixAddr(path, &addr);
  if (r != 0) {
    ThrowSysPath(env, r, "sendmsg", path);
    return -1;
  }
  ssize_t n = SendMsg(sock, reinterpret_cast<const sockaddr*>(&addr.sa), addr.len, data, len, fds.data(),
                      fds.size(), flags);
  if (n < 0) {
    ThrowSysPath(env, static_cast<int>(-n), "sendmsg", path);
    return -1;
  }
  return n;
}

Napi::Value SendDatagram(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* fn = "sendDatagram";
  std::string path;
  const uint8_t* data;
  size_t len;
  std::vector<int> fds;
  int64_t sndbuf;
  if (!ArgString(info, 0, fn, "path", &path) || !ArgBuffer(info, 1, fn, "data", &data, &len) ||
      !ArgFds(info, 2, fn, "fds", &fds) || !ArgOptInt(info, 3, fn, "sndbuf", 1, INT32_MAX, 0, &sndbuf))
    return Undef(info);
  int s = NewDgram(env, sndbuf);
  if (s < 0) return Undef(info);
  ssize_t n = SendDatagramOn(env, s, path, data, len, fds, 0);
  close(s);
  if (n < 0) return Undef(info);
  return Napi::Number::New(env, static_cast<double>(n));
}

Napi::Value DgramSocket(const Napi::CallbackInfo& info) {
  int64_t sndbuf;
  if (!ArgOptInt(info, 0, "dgramSocket", "sndbuf", 1, INT32_MAX, 0, &sndbuf)) return Undef(info);
  int s = NewDgram(info.Env(), sndbuf);
  if (s < 0) return Undef(info);
  return Napi::Number::New(info.Env(), s);
}

Napi::Value SendTo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* fn = "sendTo";
  int sock;
  std::string path;
  const uint8_t* data;
  size_t len;
  std::vector<int> fds;
  bool dontwait;
  if (!ArgFd(info, 0, fn, "sock", &sock) || !ArgString(info, 1, fn, "path", &path) ||
      !ArgBuffer(info, 2, fn, "data", &data, &len) || !ArgFds(info, 3, fn, "fds", &fds) ||
      !ArgBool(info, 4, fn, "dontwait", &dontwait))
    return Undef(info);
  ssize_t n = SendDatagramOn(env, sock, path, data, len, fds, dontwait ? MSG_DONTWAIT : 0);
  if (n < 0) return Undef(info);
  return Napi::Number::New(env, static_cast<double>(n));
}

Napi::Value BindDgram(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* fn = "bindDgram";
  std::string path;
  bool passcred;
  if (!ArgString(info, 0, fn, "path", &path) || !ArgBool(info, 1, fn, "passcred", &passcred)) return Undef(info);
  UnixAddr addr;
  int r = MakeUnixAddr(path, &addr);
  if (r != 0) {
    ThrowSysPath(env, r, "bind", path);
    return Undef(info);
  }
  int s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) {
    ThrowSys(env, errno, "socket");
    return Undef(info);
  }
  int one = 1;
  if (passcred && setsockopt(s, SOL_SOCKET, SO_PASSCRED, &one, sizeof one) < 0) {
    CloseQuietly(s);
    ThrowSys(env, errno, "setsockopt");
    return Undef(info);
  }
  if (bind(s, reinterpret_cast<const sockaddr*>(&addr.sa), addr.len) < 0) {
    CloseQuietly(s);
    ThrowSysPath(env, errno, "bind", path);
    return Undef(info);
  }
  return Napi::Number::New(env, s);
}

Napi::Value SocketPair(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
    ThrowSys(env, errno, "socketpair");
    return Undef(info);
  }
  Napi::Array out = Napi::Array::New(env, 2);
  out.Set(0u, Napi::Number::New(env, sv[0]));
  out.Set(1u, Napi::Number::New(env, sv[1]));
  return out;
}

Napi::Value ConnectUnix(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path;
  if (!ArgString(info, 0, "connectUnix", "path", &path)) return Undef(info);
  UnixAddr addr;
  int r = MakeUnixAddr(path, &addr);
  if (r != 0) {
    ThrowSysPath(env, r, "connect", path);
    return Undef(info);
  }
  int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s < 0) {
    ThrowSys(env, errno, "socket");
    return Undef(info);
  }
  if (connect(s, reinterpret_cast<const sockaddr*>(&addr.sa), addr.len) < 0) {
    int err = errno;
    if (err == EINTR) {
      // An interrupted connect goes on in the background (retrying it gives EALREADY): wait for its outcome.
      struct pollfd p = {s, POLLOUT, 0};
      while (poll(&p, 1, -1) < 0 && errno == EINTR) {
      }
      socklen_t l = sizeof err;
      if (getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &l) < 0) err = errno;
    }
    if (err != 0) {
      close(s);
      ThrowSysPath(env, err, "connect", path);
      return Undef(info);
    }
  }
  return Napi::Number::New(env, s);
}

const char* KindOf(mode_t mode) {
  switch (mode & S_IFMT) {
    case S_IFSOCK: return "socket";
    case S_IFREG: return "file";
    case S_IFDIR: return "dir";
    case S_IFIFO: return "fifo";
    case S_IFCHR: return "chr";
    case S_IFBLK: return "blk";
    case S_IFLNK: return "link";
    default: return "unknown";  // anon inodes: epoll, eventfd, timerfd, signalfd, pidfd
  }
}

// getsockopt of an int option; returns 0 or errno.
int SockOptInt(int fd, int opt, int* out) {
  socklen_t l = sizeof *out;
  return getsockopt(fd, SOL_SOCKET, opt, out, &l) < 0 ? errno : 0;
}

Napi::Value Describe(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!ArgFd(info, 0, "describe", "fd", &fd)) return Undef(info);
  struct stat st;
  int r = FStat(fd, &st);
  if (r != 0) {
    ThrowSys(env, r, "fstat", fd);
    return Undef(info);
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("fd", Napi::Number::New(env, fd));
  out.Set("kind", Napi::String::New(env, KindOf(st.st_mode)));
  out.Set("dev", Napi::BigInt::New(env, static_cast<uint64_t>(st.st_dev)));
  out.Set("ino", Napi::BigInt::New(env, static_cast<uint64_t>(st.st_ino)));
  if (!S_ISSOCK(st.st_mode)) return out;

  int type, domain, protocol, acceptconn;
  if ((r = SockOptInt(fd, SO_TYPE, &type)) != 0 || (r = SockOptInt(fd, SO_DOMAIN, &domain)) != 0 ||
      (r = SockOptInt(fd, SO_PROTOCOL, &protocol)) != 0 || (r = SockOptInt(fd, SO_ACCEPTCONN, &acceptconn)) != 0) {
    ThrowSys(env, r, "getsockopt", fd);
    return Undef(info);
  }
  const char* typeName = type == SOCK_STREAM      ? "stream"
                         : type == SOCK_DGRAM     ? "dgram"
                         : type == SOCK_SEQPACKET ? "seqpacket"
                         : type == SOCK_RAW       ? "raw"
                                                  : "unknown";
  const char* family = domain == AF_INET ? "inet" : domain == AF_INET6 ? "inet6" : domain == AF_UNIX ? "unix" : "other";
  out.Set("type", Napi::String::New(env, typeName));
  out.Set("family", Napi::String::New(env, family));
  out.Set("protocol", Napi::Number::New(env, protocol));
  out.Set("listening", Napi::Boolean::New(env, acceptconn != 0));

  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof ss);
  socklen_t sl = sizeof ss;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &sl) < 0) {
    ThrowSys(env, errno, "getsockname", fd);
    return Undef(info);
  }
  char text[INET6_ADDRSTRLEN];
  if (ss.ss_family == AF_INET) {
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    inet_ntop(AF_INET, &a->sin_addr, text, sizeof text);
    out.Set("address", Napi::String::New(env, text));
    out.Set("port", Napi::Number::New(env, ntohs(a->sin_port)));
  } else if (ss.ss_family == AF_INET6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    inet_ntop(AF_INET6, &a->sin6_addr, text, sizeof text);
    out.Set("address", Napi::String::New(env, text));
    out.Set("port", Napi::Number::New(env, ntohs(a->sin6_port)));
  } else if (domain == AF_UNIX) {
    auto* a = reinterpret_cast<sockaddr_un*>(&ss);
    const size_t base = offsetof(sockaddr_un, sun_path);
    size_t n = sl > base ? sl - base : 0;
    if (n > sizeof a->sun_path) n = sizeof a->sun_path;
    std::string name;
    if (n == 0) {
      name = "";  // unnamed
    } else if (a->sun_path[0] == '\0') {
      name = "@" + std::string(a->sun_path + 1, n - 1);  // abstract: the length is the name, zeros included
    } else {
      name = std::string(a->sun_path, strnlen(a->sun_path, n));
    }
    out.Set("address", Napi::String::New(env, name.data(), name.size()));
  }
  return out;
}

Napi::Value FStatFn(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!ArgFd(info, 0, "fstat", "fd", &fd)) return Undef(info);
  struct stat st;
  int r = FStat(fd, &st);
  if (r != 0) {
    ThrowSys(env, r, "fstat", fd);
    return Undef(info);
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("dev", Napi::BigInt::New(env, static_cast<uint64_t>(st.st_dev)));
  out.Set("ino", Napi::BigInt::New(env, static_cast<uint64_t>(st.st_ino)));
  out.Set("mode", Napi::Number::New(env, st.st_mode));
  return out;
}

Napi::Value GetCloexec(const Napi::CallbackInfo& info) {
  int fd;
  if (!ArgFd(info, 0, "getCloexec", "fd", &fd)) return Undef(info);
  int flags = fcntl(fd, F_GETFD);
  if (flags < 0) {
    ThrowSys(info.Env(), errno, "fcntl", fd);
    return Undef(info);
  }
  return Napi::Boolean::New(info.Env(), (flags & FD_CLOEXEC) != 0);
}

Napi::Value SetCloexec(const Napi::CallbackInfo& info) {
  int fd;
  bool on;
  if (!ArgFd(info, 0, "setCloexec", "fd", &fd) || !ArgBool(info, 1, "setCloexec", "on", &on)) return Undef(info);
  int flags = fcntl(fd, F_GETFD);
  if (flags < 0 || fcntl(fd, F_SETFD, on ? (flags | FD_CLOEXEC) : (flags & ~FD_CLOEXEC)) < 0)
    ThrowSys(info.Env(), errno, "fcntl", fd);
  return Undef(info);
}

Napi::Value SetNonblock(const Napi::CallbackInfo& info) {
  int fd;
  bool on;
  if (!ArgFd(info, 0, "setNonblock", "fd", &fd) || !ArgBool(info, 1, "setNonblock", "on", &on)) return Undef(info);
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, on ? (flags | O_NONBLOCK) : (flags & ~O_NONBLOCK)) < 0)
    ThrowSys(info.Env(), errno, "fcntl", fd);
  return Undef(info);
}

Napi::Value Dup(const Napi::CallbackInfo& info) {
  int fd;
  int64_t min;
  if (!ArgFd(info, 0, "dup", "fd", &fd) || !ArgOptInt(info, 1, "dup", "min", 0, INT32_MAX, 3, &min))
    return Undef(info);
  int d = fcntl(fd, F_DUPFD_CLOEXEC, static_cast<int>(min));
  if (d < 0) {
    ThrowSys(info.Env(), errno, "fcntl", fd);
    return Undef(info);
  }
  return Napi::Number::New(info.Env(), d);
}

Napi::Value Dup2(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int oldfd, newfd;
  bool cloexec = false;
  if (!ArgFd(info, 0, "dup2", "oldfd", &oldfd) || !ArgFd(info, 1, "dup2", "newfd", &newfd)) return Undef(info);
  if (info.Length() > 2 && !info[2].IsUndefined() && !ArgBool(info, 2, "dup2", "cloexec", &cloexec))
    return Undef(info);
  if (oldfd == newfd) {
    // dup3 refuses equal fds; dup2 would leave the fd as it is. Only the flag is asked for.
    int flags = fcntl(oldfd, F_GETFD);
    if (flags < 0 || fcntl(oldfd, F_SETFD, cloexec ? (flags | FD_CLOEXEC) : (flags & ~FD_CLOEXEC)) < 0)
      ThrowSys(env, errno, "fcntl", oldfd);
    return Undef(info);
  }
  // dup3 sets the flag atomically with the dup (no window where a fork would inherit the wrong state).
  // EBUSY: Linux's dup2/open race; retrying is what the man page prescribes.
  while (dup3(oldfd, newfd, cloexec ? O_CLOEXEC : 0) < 0) {
    if (errno == EINTR || errno == EBUSY) continue;
    ThrowSys(env, errno, "dup3", oldfd);
    break;
  }
  return Undef(info);
}

// lstat through the raw system call (glibc >= 2.33 exports lstat@GLIBC_2.33). Returns 0 or errno.
int LStat(const std::string& path, struct stat* st) {
  if (syscall(SYS_newfstatat, AT_FDCWD, path.c_str(), st, AT_SYMLINK_NOFOLLOW) == 0) return 0;
  return errno;
}

// Is there a listener behind the socket file at `addr`? 1 yes, 0 no (stale), -1 vanished (ENOENT).
int ProbeUnix(const UnixAddr& addr) {
  int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (s < 0) return 1;  // cannot tell: assume live, never unlink on a guess
  int r = connect(s, reinterpret_cast<const sockaddr*>(&addr.sa), addr.len);
  int err = r < 0 ? errno : 0;
  close(s);
  if (err == ECONNREFUSED) return 0;
  if (err == ENOENT) return -1;
  return 1;  // connected, EAGAIN (backlog full), EINPROGRESS...: somebody listens
}

Napi::Value ListenUnix(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* fn = "listenUnix";
  std::string path;
  int64_t backlog, mode;
  if (!ArgString(info, 0, fn, "path", &path) || !ArgInt(info, 1, fn, "backlog", 0, INT32_MAX, &backlog) ||
      !ArgInt(info, 2, fn, "mode", -1, 07777, &mode))
    return Undef(info);
  const bool abstract = path[0] == '@';
  UnixAddr addr;
  int r = MakeUnixAddr(path, &addr);
  if (r != 0) {
    ThrowSysPath(env, r, "bind", path);
    return Undef(info);
  }
  int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s < 0) {
    ThrowSys(env, errno, "socket");
    return Undef(info);
  }
  // At most a few rounds: bind, and on EADDRINUSE replace a stale socket file (one nobody listens on).
  for (int attempt = 0;; attempt++) {
    if (bind(s, reinterpret_cast<const sockaddr*>(&addr.sa), addr.len) == 0) break;
    int err = errno;
    if (err == EADDRINUSE && !abstract && attempt < 3) {
      struct stat st;
      // Only a socket file is ever removed: never a regular file or a symlink someone put there.
      int ls = LStat(path, &st);
      if (ls == ENOENT) continue;  // removed meanwhile
      if (ls == 0 && S_ISSOCK(st.st_mode)) {
        int live = ProbeUnix(addr);
        if (live == -1) continue;  // vanished meanwhile
        if (live == 0) {
          if (unlink(path.c_str()) < 0 && errno != ENOENT) {
            err = errno;
            close(s);
            ThrowSysPath(env, err, "unlink", path);
            return Undef(info);
          }
          continue;
        }
      }
    }
    close(s);
    ThrowSysPath(env, err, "bind", path);
    return Undef(info);
  }
  // chmod before listen: until listen, connecting is refused, so no client gets in under the umask's mode.
  const char* failed = nullptr;
  if (!abstract && mode >= 0 && chmod(path.c_str(), static_cast<mode_t>(mode)) < 0) failed = "chmod";
  if (failed == nullptr && listen(s, static_cast<int>(backlog)) < 0) failed = "listen";
  if (failed != nullptr) {
    int err = errno;
    close(s);
    if (!abstract) unlink(path.c_str());  // ours: we just bound it
    ThrowSysPath(env, err, failed, path);
    return Undef(info);
  }
  return Napi::Number::New(env, s);
}

Napi::Value Close(const Napi::CallbackInfo& info) {
  int fd;
  if (!ArgFd(info, 0, "close", "fd", &fd)) return Undef(info);
  // On Linux the fd is gone even when close reports EINTR: retrying could close someone else's new fd.
  if (close(fd) < 0 && errno != EINTR) ThrowSys(info.Env(), errno, "close", fd);
  return Undef(info);
}

Napi::Value MemfdSealed(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name;
  const uint8_t* data;
  size_t len;
  if (!ArgString(info, 0, "memfdSealed", "name", &name) || !ArgBuffer(info, 1, "memfdSealed", "data", &data, &len))
    return Undef(info);
  // The raw system call: the glibc wrapper is fine (2.27) but older headers lack it.
  int fd = static_cast<int>(syscall(SYS_memfd_create, name.c_str(), MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (fd < 0) {
    ThrowSys(env, errno, "memfd_create");
    return Undef(info);
  }
  size_t done = 0;
  while (done < len) {
    ssize_t n = write(fd, data + done, len - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      close(fd);
      ThrowSys(env, err, "write");
      return Undef(info);
    }
    done += static_cast<size_t>(n);
  }
  if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) < 0) {
    int err = errno;
    close(fd);
    ThrowSys(env, err, "fcntl");
    return Undef(info);
  }
  return Napi::Number::New(env, fd);
}

Napi::Value PeerCred(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!ArgFd(info, 0, "peerCred", "fd", &fd)) return Undef(info);
  struct ucred c;
  socklen_t l = sizeof c;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &c, &l) < 0) {
    ThrowSys(env, errno, "getsockopt", fd);
    return Undef(info);
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("pid", Napi::Number::New(env, c.pid));
  out.Set("uid", Napi::Number::New(env, c.uid));
  out.Set("gid", Napi::Number::New(env, c.gid));
  return out;
}

// PR_SET_CHILD_SUBREAPER: a process that must outlive its children in a container (its parent, a tiny init, exits
// with it) adopts the grandchildren orphaned by an upgrade, to wait for the one that serves.
Napi::Value SetChildSubreaper(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  bool on;
  if (!ArgBool(info, 0, "setChildSubreaper", "on", &on)) return Undef(info);
  if (prctl(PR_SET_CHILD_SUBREAPER, on ? 1L : 0L, 0L, 0L, 0L) < 0) ThrowSys(env, errno, "prctl");
  return Undef(info);
}

// waitpid(pid, WNOHANG) for a process libuv does not know (adopted as a subreaper): null while it runs, else
// { code, signal } (signal as a number, 0 when it exited). Only for pids Node did not spawn, or libuv loses them.
Napi::Value WaitPid(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t pid;
  if (!ArgInt(info, 0, "waitPid", "pid", 1, INT32_MAX, &pid)) return Undef(info);
  int status = 0;
  pid_t r;
  do {
    r = waitpid(static_cast<pid_t>(pid), &status, WNOHANG);
  } while (r < 0 && errno == EINTR);
  if (r < 0) {
    ThrowSys(env, errno, "waitpid");
    return Undef(info);
  }
  if (r == 0) return env.Null();
  Napi::Object out = Napi::Object::New(env);
  out.Set("code", WIFEXITED(status) ? Napi::Number::New(env, WEXITSTATUS(status)) : env.Null());
  out.Set("signal", Napi::Number::New(env, WIFSIGNALED(status) ? WTERMSIG(status) : 0));
  return out;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  env.SetInstanceData(new AddonData());
  exports.Set("setErrorClass", Napi::Function::New(env, SetErrorClass, "setErrorClass"));
  exports.Set("sendDatagram", Napi::Function::New(env, SendDatagram, "sendDatagram"));
  exports.Set("dgramSocket", Napi::Function::New(env, DgramSocket, "dgramSocket"));
  exports.Set("sendTo", Napi::Function::New(env, SendTo, "sendTo"));
  exports.Set("bindDgram", Napi::Function::New(env, BindDgram, "bindDgram"));
  exports.Set("recvDatagram", Napi::Function::New(env, RecvDatagram, "recvDatagram"));
  exports.Set("socketpair", Napi::Function::New(env, SocketPair, "socketpair"));
  exports.Set("connectUnix", Napi::Function::New(env, ConnectUnix, "connectUnix"));
  exports.Set("sendMsg", Napi::Function::New(env, SendMsgAsync, "sendMsg"));
  exports.Set("recvMsg", Napi::Function::New(env, RecvMsgAsync, "recvMsg"));
  exports.Set("describe", Napi::Function::New(env, Describe, "describe"));
  exports.Set("fstat", Napi::Function::New(env, FStatFn, "fstat"));
  exports.Set("getCloexec", Napi::Function::New(env, GetCloexec, "getCloexec"));
  exports.Set("setCloexec", Napi::Function::New(env, SetCloexec, "setCloexec"));
  exports.Set("dup", Napi::Function::New(env, Dup, "dup"));
  exports.Set("close", Napi::Function::New(env, Close, "close"));
  exports.Set("memfdSealed", Napi::Function::New(env, MemfdSealed, "memfdSealed"));
  exports.Set("peerCred", Napi::Function::New(env, PeerCred, "peerCred"));
  exports.Set("setNonblock", Napi::Function::New(env, SetNonblock, "setNonblock"));
  exports.Set("dup2", Napi::Function::New(env, Dup2, "dup2"));
  exports.Set("listenUnix", Napi::Function::New(env, ListenUnix, "listenUnix"));
  exports.Set("setChildSubreaper", Napi::Function::New(env, SetChildSubreaper, "setChildSubreaper"));
  exports.Set("waitPid", Napi::Function::New(env, WaitPid, "waitPid"));
  return exports;
}

}  // namespace
}  // namespace sdh

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) { return sdh::Init(env, exports); }

NODE_API_MODULE(sd_handoff, InitModule)
