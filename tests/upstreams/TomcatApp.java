// A real (embedded) Tomcat for the differential path test: servlet mapping
// as Tomcat does it (path parameters `;x` removed before mapping).
// Prints "PORT <n>" once listening.
import jakarta.servlet.http.HttpServlet;
import jakarta.servlet.http.HttpServletRequest;
import jakarta.servlet.http.HttpServletResponse;
import java.io.File;
import java.io.IOException;
import java.nio.file.Files;
import org.apache.catalina.Context;
import org.apache.catalina.connector.Connector;
import org.apache.catalina.startup.Tomcat;

public class TomcatApp {
    static class Answer extends HttpServlet {
        private final String handler;

        Answer(String handler) {
            this.handler = handler;
        }

        @Override
        protected void service(HttpServletRequest req, HttpServletResponse res) throws IOException {
            res.setHeader("X-Upstream-Handler", handler);
            res.setContentType("application/json");
            res.getWriter().write("{\"server\":\"tomcat\",\"handler\":\"" + handler + "\"}");
        }
    }

    public static void main(String[] args) throws Exception {
        // Start-up chatter on stderr would drown the test output.
        java.util.logging.Logger root = java.util.logging.Logger.getLogger("");
        root.setLevel(java.util.logging.Level.WARNING);
        for (java.util.logging.Handler handler : root.getHandlers()) {
            handler.setLevel(java.util.logging.Level.WARNING);
        }
        // The test gives a folder it removes afterwards; Tomcat writes there.
        File base = args.length > 0 ? new File(args[0]) : Files.createTempDirectory("tomcat-differential").toFile();
        Tomcat tomcat = new Tomcat();
        tomcat.setBaseDir(base.getAbsolutePath());
        Connector connector = new Connector();
        connector.setPort(0);
        connector.setProperty("address", "127.0.0.1");
        tomcat.setConnector(connector);
        Context context = tomcat.addContext("", base.getAbsolutePath());
        Tomcat.addServlet(context, "admin", new Answer("admin"));
        Tomcat.addServlet(context, "public", new Answer("public"));
        Tomcat.addServlet(context, "root", new Answer("root"));
        context.addServletMappingDecoded("/admin/*", "admin");
        context.addServletMappingDecoded("/public/*", "public");
        context.addServletMappingDecoded("/", "root");
        tomcat.start();
        System.out.println("PORT " + connector.getLocalPort());
        System.out.flush();
        tomcat.getServer().await();
    }
}
