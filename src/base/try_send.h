#pragma once
// try_send: uv_try_write for a TCP handle with nothing queued, as one send(2).
//
// libuv writes with write(2)/writev(2). On a socket, sendmsg(2) takes a shorter way through
// the kernel (no file-position lock, no VFS layer) and MSG_NOSIGNAL keeps a peer that
// closed from raising SIGPIPE. Callers use it only when none of their uv_write requests is
// pending on the handle, which is uv_try_write's own condition for writing at once.
//
// The call goes through syscall(2) rather than glibc's sendmsg wrapper: sendmsg is a thread
// cancellation point, and in a multi-threaded process (keypool has worker and store
// threads) the wrapper switches asynchronous cancellation on and off around every call.
// keypool never cancels a thread. (perf: the two calls were about 0.9% of the proxy's CPU,
// sends and libuv's reads together; reads still pay it, inside libuv.)
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>
#include <uv.h>

#include <cerrno>

namespace keypool {

// Bytes written (possibly fewer than asked), UV_EAGAIN when the socket is full, or another
// libuv error code. bufs: uv_buf_t is laid out as struct iovec on Unix (libuv documents it).
inline int try_send(uv_tcp_t* tcp, const uv_buf_t* bufs, unsigned count) {
  uv_os_fd_t fd;
  if (int r = uv_fileno(reinterpret_cast<const uv_handle_t*>(tcp), &fd); r != 0) return r;
  msghdr msg{};
  msg.msg_iov = reinterpret_cast<iovec*>(const_cast<uv_buf_t*>(bufs));
  msg.msg_iovlen = count;
  for (;;) {
    const long n = ::syscall(SYS_sendmsg, fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n >= 0) return static_cast<int>(n);
    if (errno == EINTR) continue;
    if (errno == EWOULDBLOCK) return UV_EAGAIN;
    return uv_translate_sys_error(errno);
  }
}

}  // namespace keypool
