#include "async.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <vector>

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common.h"

namespace sdh {

namespace {

// poll + recvmsg for one message. A datagram worker resolves null on timeout; a stream worker rejects with
// ETIMEDOUT (syscall "poll"), as NativeAddon documents.
class RecvWorker : public Napi::AsyncWorker {
 public:
  RecvWorker(Napi::Env env, int fd, size_t maxBytes, size_t maxFds, int timeoutMs, bool nullOnTimeout)
      : Napi::AsyncWorker(env, "sd_handoff.recv"),
        deferred_(Napi::Promise::Deferred::New(env)),
        fd_(fd),
        maxBytes_(maxBytes),
        maxFds_(maxFds),
        timeoutMs_(timeoutMs),
        nullOnTimeout_(nullOnTimeout) {}

  ~RecvWorker() override {
    free(buf_);
    // Fds received but never handed to JS (the environment went away) must not leak.
    if (!delivered_)
      for (int fd : fds_) close(fd);
  }

  Napi::Promise Promise() { return deferred_.Promise(); }

 protected:
  void Execute() override {
    // Allocated here, off the JS thread; malloc (not new) so a huge maxBytes is ENOMEM, not an abort.
    buf_ = static_cast<uint8_t*>(malloc(maxBytes_ > 0 ? maxBytes_ : 1));
    size_t controlLen = CMSG_SPACE(sizeof(int) * maxFds_) + CMSG_SPACE(sizeof(struct ucred));
    std::vector<max_align_t> control((controlLen + sizeof(max_align_t) - 1) / sizeof(max_align_t));
    if (buf_ == nullptr) return Fail(ENOMEM, "recvmsg");

    const int64_t deadline = NowMs() + timeoutMs_;
    struct msghdr msg;
    ssize_t n;
    for (;;) {
      int r = WaitFor(fd_, POLLIN, deadline);
      if (r == ETIMEDOUT) {
        timedOut_ = true;
        return;
      }
      if (r != 0) return Fail(r, "poll");
      struct iovec iov;
      iov.iov_base = buf_;
      iov.iov_len = maxBytes_;
      memset(&msg, 0, sizeof msg);
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      msg.msg_control = control.data();
      msg.msg_controllen = controlLen;
      n = recvmsg(fd_, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
      if (n >= 0) break;
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        // Someone else took the message between poll and recvmsg: wait again for what time is left.
        if (NowMs() >= deadline) {
          timedOut_ = true;
          return;
        }
        continue;
      }
      return Fail(errno, "recvmsg");
    }
    len_ = static_cast<size_t>(n);
    truncated_ = (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0;
    // Every SCM_RIGHTS message counts: the kernel may attach more than one.
    for (struct cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET) continue;
      if (c->cmsg_type == SCM_RIGHTS) {
        size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        const unsigned char* p = CMSG_DATA(c);
        for (size_t k = 0; k < count; k++) {
          int fd;
          memcpy(&fd, p + k * sizeof(int), sizeof fd);
          fds_.push_back(fd);
        }
      } else if (c->cmsg_type == SCM_CREDENTIALS && c->cmsg_len >= CMSG_LEN(sizeof(struct ucred))) {
        memcpy(&cred_, CMSG_DATA(c), sizeof cred_);
        hasCred_ = true;
      }
    }
  }

  void OnOK() override {
    Napi::Env env = Env();
    if (error_.err != 0) {
      deferred_.Reject(MakeSysError(env, error_));
      return;
    }
    if (timedOut_) {
      if (nullOnTimeout_) {
        deferred_.Resolve(env.Null());
      } else {
        SysError e;
        e.err = ETIMEDOUT;
        e.syscall = "poll";
        e.hasFd = true;
        e.fd = fd_;
        deferred_.Reject(MakeSysError(env, e));
      }
      return;
    }
    Napi::Object out = Napi::Object::New(env);
    out.Set("data", Napi::Buffer<uint8_t>::Copy(env, buf_, len_));
    Napi::Array fds = Napi::Array::New(env, fds_.size());
    for (uint32_t k = 0; k < fds_.size(); k++) fds.Set(k, Napi::Number::New(env, fds_[k]));
    out.Set("fds", fds);
    if (hasCred_) {
      Napi::Object cred = Napi::Object::New(env);
      cred.Set("pid", Napi::Number::New(env, cred_.pid));
      cred.Set("uid", Napi::Number::New(env, cred_.uid));
      cred.Set("gid", Napi::Number::New(env, cred_.gid));
      out.Set("cred", cred);
    }
    out.Set("truncated", Napi::Boolean::New(env, truncated_));
    if (env.IsExceptionPending()) {
      deferred_.Reject(env.GetAndClearPendingException().Value());
      return;
    }
    delivered_ = true;
    deferred_.Resolve(out);
  }

 private:
  void Fail(int err, const char* syscall) {
    error_.err = err;
    error_.syscall = syscall;
    error_.hasFd = true;
    error_.fd = fd_;
  }

  Napi::Promise::Deferred deferred_;
  const int fd_;
  const size_t maxBytes_;
  const size_t maxFds_;
  const int timeoutMs_;
  const bool nullOnTimeout_;

  uint8_t* buf_ = nullptr;
  size_t len_ = 0;
  std::vector<int> fds_;
  struct ucred cred_ {};
  bool hasCred_ = false;
  bool truncated_ = false;
  bool timedOut_ = false;
  bool delivered_ = false;
  SysError error_;
};

// All of `data` on a stream socket, fds attached to the first byte; EAGAIN waits in poll for the time left.
class SendWorker : public Napi::AsyncWorker {
 public:
  SendWorker(Napi::Env env, int fd, const uint8_t* data, size_t len, std::vector<int> fds, int timeoutMs)
      : Napi::AsyncWorker(env, "sd_handoff.sendMsg"),
        deferred_(Napi::Promise::Deferred::New(env)),
        fd_(fd),
        // Copied: the caller may reuse or transfer its Buffer while the send runs.
        data_(data, data + len),
        fds_(std::move(fds)),
        timeoutMs_(timeoutMs) {}

  Napi::Promise Promise() { return deferred_.Promise(); }

 protected:
  void Execute() override {
    const int64_t deadline = NowMs() + timeoutMs_;
    bool first = true;
    while (sent_ < data_.size()) {
      ssize_t n = SendMsg(fd_, nullptr, 0, data_.data() + sent_, data_.size() - sent_, fds_.data(),
                          first ? fds_.size() : 0, MSG_DONTWAIT);
      if (n == -EAGAIN || n == -EWOULDBLOCK) {
        int r = WaitFor(fd_, POLLOUT, deadline);
        if (r != 0) return Fail(r, "poll");
        continue;
      }
      if (n < 0) return Fail(static_cast<int>(-n), "sendmsg");
      sent_ += static_cast<size_t>(n);
      first = false;
    }
  }

  void OnOK() override {
    Napi::Env env = Env();
    if (error_.err != 0) {
      Napi::Value err = MakeSysError(env, error_);
      // What already went out cannot be taken back: say how much, so the caller knows the stream's state.
      if (err.IsObject()) err.As<Napi::Object>().Set("bytesSent", Napi::Number::New(env, static_cast<double>(sent_)));
      deferred_.Reject(err);
      return;
    }
    deferred_.Resolve(Napi::Number::New(env, static_cast<double>(sent_)));
  }

 private:
  void Fail(int err, const char* syscall) {
    error_.err = err;
    error_.syscall = syscall;
    error_.hasFd = true;
    error_.fd = fd_;
  }

  Napi::Promise::Deferred deferred_;
  const int fd_;
  std::vector<uint8_t> data_;
  std::vector<int> fds_;
  const int timeoutMs_;
  size_t sent_ = 0;
  SysError error_;
};

// A function that returns a Promise reports bad arguments as a rejection too, never as a synchronous throw.
Napi::Value RejectPending(Napi::Env env) {
  // Clear first: N-API refuses to create a promise while an exception is pending.
  Napi::Value err = env.GetAndClearPendingException().Value();
  Napi::Promise::Deferred d = Napi::Promise::Deferred::New(env);
  d.Reject(err);
  return d.Promise();
}

Napi::Value QueueRecv(const Napi::CallbackInfo& info, const char* fn, bool nullOnTimeout) {
  int fd, timeout;
  int64_t maxBytes, maxFds;
  if (!ArgFd(info, 0, fn, "fd", &fd) || !ArgInt(info, 1, fn, "maxBytes", 0, INT32_MAX, &maxBytes) ||
      !ArgInt(info, 2, fn, "maxFds", 0, INT32_MAX, &maxFds) || !ArgTimeout(info, 3, fn, &timeout))
    return RejectPending(info.Env());
  // One message never carries more than SCM_MAX_FD fds: a larger maxFds is accepted and means "all of them".
  if (maxFds > static_cast<int64_t>(kMaxFds)) maxFds = static_cast<int64_t>(kMaxFds);
  auto* w = new RecvWorker(info.Env(), fd, static_cast<size_t>(maxBytes), static_cast<size_t>(maxFds), timeout,
                           nullOnTimeout);
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

}  // namespace

Napi::Value RecvDatagram(const Napi::CallbackInfo& info) { return QueueRecv(info, "recvDatagram", true); }

Napi::Value RecvMsgAsync(const Napi::CallbackInfo& info) { return QueueRecv(info, "recvMsg", false); }

Napi::Value SendMsgAsync(const Napi::CallbackInfo& info) {
  const char* fn = "sendMsg";
  int fd, timeout;
  const uint8_t* data;
  size_t len;
  std::vector<int> fds;
  if (!ArgFd(info, 0, fn, "fd", &fd) || !ArgBuffer(info, 1, fn, "data", &data, &len) ||
      !ArgFds(info, 2, fn, "fds", &fds) || !ArgTimeout(info, 3, fn, &timeout))
    return RejectPending(info.Env());
  if (len == 0 && !fds.empty()) {
    // On a stream socket fds travel with a byte; with none they would silently never arrive.
    ThrowInvalid(info.Env(), "sendMsg: data must not be empty when fds are attached");
    return RejectPending(info.Env());
  }
  auto* w = new SendWorker(info.Env(), fd, data, len, std::move(fds), timeout);
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

}  // namespace sdh
